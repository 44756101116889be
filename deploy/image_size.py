"""How big a service's container image will be, from the bento's contents.

    python deploy/image_size.py plate-reader:latest autocomplete:latest

Adds up the bento's models and code, and the installed size of every Python package its
requirements pull in (resolved against this environment, where the same packages are
installed). The base image (python:3.11-slim plus the build tools BentoML's Dockerfile
installs) is not in the bento and is listed apart; `podman image inspect` gives the exact
total where an image was built (CI builds the plate reader's).
"""

from __future__ import annotations

import argparse
import re
from importlib import metadata
from pathlib import Path

import bentoml
from packaging.requirements import Requirement
from rich.console import Console
from rich.table import Table


def _installed_bytes(dist: metadata.Distribution) -> int:
    return sum((f.size or 0) for f in dist.files or [])


def package_bytes(requirements: list[str]) -> dict[str, int]:
    """Installed size of each distribution the requirements need, transitively."""
    sizes: dict[str, int] = {}
    todo = [Requirement(r) for r in requirements]
    while todo:
        requirement = todo.pop()
        name = requirement.name.lower().replace("_", "-")
        if name in sizes:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            sizes[name] = 0  # not installed here (an optional extra): counted as 0
            continue
        sizes[name] = _installed_bytes(dist)
        for spec in dist.requires or []:
            dependency = Requirement(spec)
            if dependency.marker is None or dependency.marker.evaluate({"extra": ""}):
                todo.append(dependency)
    return sizes


def report(tag: str) -> tuple[str, dict[str, float]]:
    bento = bentoml.get(tag)
    root = Path(bento.path)
    lines = (root / "env" / "python" / "requirements.txt").read_text().splitlines()
    requirements = [line for line in lines if line and not re.match(r"^\s*(#|-)", line)]
    packages = package_bytes(requirements)
    models = sum(
        f.stat().st_size
        for m in bento.info.all_models
        for f in Path(bentoml.models.get(m.tag).path).rglob("*")
        if f.is_file()
    )
    code = sum(f.stat().st_size for f in (root / "src").rglob("*") if f.is_file())
    biggest = sorted(packages.items(), key=lambda kv: -kv[1])[:3]
    mb = 2**20
    return str(bento.tag), {
        "models": models / mb,
        "code": code / mb,
        "packages": sum(packages.values()) / mb,
        **{f"  of which {name}": size / mb for name, size in biggest},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tags", nargs="+", help="bento tags, e.g. plate-reader:latest")
    args = parser.parse_args()
    table = Table("bento", "part", "MB")
    for tag in args.tags:
        name, parts = report(tag)
        total = sum(v for k, v in parts.items() if not k.startswith(" "))
        for part, size in parts.items():
            table.add_row(name, part, f"{size:,.0f}")
        table.add_row(name, "[bold]total, without the base image[/bold]", f"[bold]{total:,.0f}[/bold]")
    console = Console(width=120)
    console.print(table)
    try:
        if "+cu" in metadata.version("torch"):
            console.print(
                "torch here is a CUDA build: torch rows are the GPU image's; the CPU image "
                "takes torch from PyTorch's CPU index (no nvidia-* or triton packages)."
            )
    except metadata.PackageNotFoundError:
        pass


if __name__ == "__main__":
    main()
