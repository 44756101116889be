#!/usr/bin/env bash
# Build a stand-in for the `python:3.11-slim` base image from Debian packages, for machines
# that reach package mirrors but no container registry (like our CI). With it present,
# `bentoml containerize --backend podman --opt pull-never` builds the bento's own Dockerfile
# unchanged. Machines with registry access don't need this: the real base image is pulled.
#
#   sudo deploy/container/offline-base-image.sh        # needs debootstrap and podman
set -euo pipefail
IMAGE=docker.io/library/python:3.11-slim
if podman image exists "$IMAGE"; then echo "$IMAGE already present"; exit 0; fi
ROOTFS=$(mktemp -d)
trap 'rm -rf "$ROOTFS"' EXIT
# Debian 12 ships CPython 3.11, the version the bentos pin.
debootstrap --variant=minbase --include=python3.11,ca-certificates bookworm "$ROOTFS" http://deb.debian.org/debian
# uv is what BentoML's Dockerfile installs packages with (it pip-installs uv when missing,
# and there is no pip in this image): take the one from our venv.
cp "${UV:-$(command -v uv)}" "$ROOTFS/usr/local/bin/uv"
# Trust what this machine trusts (a TLS-inspecting proxy's CA, say), and make uv use it.
cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
tar -C "$ROOTFS" -c . | podman import \
  --change "ENV UV_NATIVE_TLS=1" --change "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" \
  - "$IMAGE"
