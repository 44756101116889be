"""Keystroke savings per domain: the base model against a version fine-tuned on the same user's
text (at most 200 KB), on that user's held-out text. The goal: at least 30% more keystrokes
saved, relatively, in each domain.

    python tests/benchmarks/bench_keystroke_savings.py                      # every domain, both splits
    python tests/benchmarks/bench_keystroke_savings.py --domains dialogue --holdout blocks
    python tests/benchmarks/bench_keystroke_savings.py --versions narrative=smollm2-135m:abc,...

Each domain (tests/data/suggest_corpora.py: narrative, dialogue, technical; one author each)
runs `modelport finetune text text.txt --lora --holdout H` (the default recipe,
finetune/text.py's TextSettings, unless --max-steps is given) under `nice -n 10` for each
held-out split H (finetune/text_data.py's `hold_out`: "blocks", every 10th ~1.5 KB stretch
from all through the text; "tail", its last tenth): the job holds that part out, trains on
the rest (at most 200 KB), and measures validation perplexity and keystroke savings before
training (the base) and after (the fine-tuned version), in process, on `--eval-chars`
characters of the held-out part (whole blocks spread through it), and stores both in the new
version's metrics; this script reads them back from the store and prints the table. 4,000
characters hold ~700 word ends to ask at and dozens of accepted suggestions (600 held 2-5:
too few to tell a 30% change from chance). Training on 2 shared cores takes minutes
per domain: compare within a run.

    python tests/benchmarks/bench_keystroke_savings.py --versions dialogue=smollm2-135m:abc \
        --remeasure key,word                                              # type again, nothing trained

`--remeasure` types stored versions' held-out text again with the typists named, in process:
the same excerpts the fine-tune typed (its dataset re-read, its sha256 checked, split with its
own --holdout and share), the base alone and the base with the version's adapter, as the
service serves a user version (the fine-tune's own after-figure ran the merged model). One
excerpt at a time is typed, by base and tuned at once (their requests share the engine, as
two users' do). Under load, run it with MODELPORT_AUTOCOMPLETE_THREADS=1: two llama.cpp threads
on 2 shared cores spent ~2x the CPU per request (0.37 s against ~0.16), waiting on each other.
Each excerpt's figures are appended to OUT/remeasured.jsonl as it ends (a run cut short keeps
what it finished), and every request with its suggestions to OUT/remeasured-requests.jsonl
(what was offered where; `--look LOG` sorts the suggestions into taken, right but ending inside
a word, right word(s) then wrong, and wrong).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from tests.benchmarks.machine import describe_machine
from tests.data.suggest_corpora import DEFAULT_OUT, DOMAINS, build

GOAL = 0.30  # relative gain in keystroke savings


def finetune(domain: Path, holdout: str, args: argparse.Namespace) -> tuple[str, float]:
    """Run the fine-tune on `domain`'s text.txt, `holdout` held out; the new version's tag and
    the wall time."""
    command = [
        "nice",
        "-n",
        "10",
        str(Path(sys.executable).parent / "modelport"),
        "finetune",
        "text",
        str(domain / "text.txt"),
        "--lora",
        "--base",
        args.base,
        *(["--max-steps", str(args.max_steps)] if args.max_steps else []),
        "--holdout",
        holdout,
        "--eval-chars",
        str(args.eval_chars),
        "--eval-asks",
        args.asks,
    ]
    started = time.monotonic()
    log = domain / f"finetune-{holdout}.log"
    with log.open("w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    text = log.read_text()
    found = re.search(r"new version (\S+?)\. Serve it", text)
    if done.returncode != 0 or not found:
        raise SystemExit(f"fine-tuning {domain.name} failed (exit {done.returncode}); see {log}")
    return found.group(1), time.monotonic() - started


def remeasure(trained: list[tuple[str, str]], asks_list: list[str], args: argparse.Namespace) -> None:
    """Type each version's held-out excerpts again with each typist in `asks_list`, base and
    tuned, on one engine (as one service serves many users); print the table."""
    from finetune.text_data import excerpts, hold_out, load_text
    from services.autocomplete.keystroke_savings import Typing, engine_suggesters, served_as, type_text
    from services.core.model_store import resolve

    texts, adapters, bases = {}, [], set()
    for name, tag in trained:
        entry = resolve(tag)
        meta = entry.info.metadata
        base_dir, adapter = served_as(entry)
        if adapter is None:
            raise SystemExit(f"{tag}: not a user version (no adapter); nothing to remeasure")
        data = load_text(meta["dataset"]["path"])
        if data.sha256 != meta["dataset"]["sha256"]:
            raise SystemExit(f"{meta['dataset']['path']} changed since {tag} was trained (sha256 differs)")
        hyper = meta["hyperparameters"]
        _, held = hold_out(data.records, how=hyper["holdout"], share=hyper["val_fraction"])
        texts[name] = excerpts(held, max_chars=args.eval_chars)
        adapters.append(adapter)
        bases.add(base_dir)
    if len(bases) != 1:
        raise SystemExit("--remeasure types versions of one base at a time")
    args.out.mkdir(parents=True, exist_ok=True)
    log, asked_log = args.out / "remeasured.jsonl", args.out / "remeasured-requests.jsonl"
    typed: dict[tuple[str, str, str], Typing] = {}
    walls: dict[tuple[str, str], float] = {}
    with engine_suggesters(bases.pop(), [None, *adapters], n=1) as (base, *tuned):

        async def one(name: str, which: str, suggester: Any, number: int, asks: str) -> None:
            asked: list[tuple[int, list[str]]] = []  # (characters typed, suggestions): for a look later

            async def recording(text: str) -> list[str]:
                offered = await suggester(text)
                asked.append((len(text), offered))
                return offered

            part = await type_text(texts[name][number], recording, asks=asks)
            total = typed.setdefault((name, which, asks), Typing())
            for field in ("characters", "keystrokes", "requests", "accepted"):
                setattr(total, field, getattr(total, field) + getattr(part, field))
            total.latencies += part.latencies
            record = {
                "domain": name,
                "version": dict(trained)[name],
                "model": which,
                "asks": asks,
                "excerpt": number,
            }
            with log.open("a") as out:
                out.write(json.dumps({**record, **part.summary()}) + "\n")
            with asked_log.open("a") as out:
                out.write(json.dumps({**record, "text": texts[name][number], "asked": asked}) + "\n")
            print(f"{name} {which} {asks} excerpt {number}: {part.summary()}", flush=True)

        # One excerpt at a time, base and tuned at once, the every-key typist first: a run cut
        # short keeps whole excerpts, each typed by both.
        for asks in asks_list:
            for (name, _), own in zip(trained, tuned, strict=True):
                started = time.monotonic()
                for number in args.excerpts or range(len(texts[name])):

                    async def both(number: int, name: str, own: Any, asks: str) -> None:
                        await asyncio.gather(
                            one(name, "base", base, number, asks), one(name, "tuned", own, number, asks)
                        )

                    asyncio.run(both(number, name, own, asks))
                walls[(name, asks)] = time.monotonic() - started
                print(f"{name} {asks}: {walls[(name, asks)] / 60:.1f} min", flush=True)
    threads = os.environ.get("MODELPORT_AUTOCOMPLETE_THREADS", "one per core")
    table = Table(
        title=f"Keystroke savings on held-out text, typed again: base vs base + the version's adapter, "
        f"in process, a domain's typists at once on one engine (llama.cpp threads: {threads})\n"
        f"{describe_machine()}"
    )
    for column in ("domain", "version", "held-out chars"):
        table.add_column(column)
    for asks in asks_list:
        for column in ("savings base -> tuned", "accepted share", "requests", "p50 ms", "wall"):
            table.add_column(f"{asks}: {column}", justify="right")
    for name, tag in trained:
        cells = []
        for asks in asks_list:
            before, after = typed[(name, "base", asks)], typed[(name, "tuned", asks)]
            gain = after.savings / before.savings - 1 if before.savings else float("inf")
            cells += [
                f"{before.savings:.1%} -> {after.savings:.1%} ({gain:+.0%})",
                f"{before.summary()['accepted_share']:.1%} -> {after.summary()['accepted_share']:.1%}",
                f"{before.requests} / {after.requests}",
                f"{before.latency_ms(0.5):.0f} / {after.latency_ms(0.5):.0f}",
                f"{walls[(name, asks)] / 60:.0f} min",
            ]
        table.add_row(name, tag, str(typed[(name, "base", asks_list[0])].characters), *cells)
    Console(width=240).print(table)
    look(asked_log)


def look(requests_log: Path) -> None:
    """What the typists were offered and what they took, from a --remeasure requests log: of the
    requests that offered something, the share taken (the next word(s) exactly, ending where a
    word ends), right but one character, right but ending inside a word, right word(s) then wrong
    (e.g. the right word with other punctuation after it), or wrong from its first word; and how
    long the suggestions were."""
    from collections import defaultdict

    from services.autocomplete.keystroke_savings import accepted, word_ends

    counts: dict[tuple[str, str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for line in requests_log.read_text().splitlines():
        run = json.loads(line)
        seen = counts[(run["domain"], run["asks"], run["model"])]
        for typed, offered in run["asked"]:
            rest, seen["requests"] = run["text"][typed:], seen["requests"] + 1
            if not offered:
                continue
            best = offered[0]
            seen["offered"] += 1
            seen["chars"] += len(best)
            # the longest start of the suggestion that is right and ends where words end in both
            right = max(
                (
                    k
                    for k in range(2, len(best))
                    if rest.startswith(best[:k]) and word_ends(rest, k) and word_ends(best, k)
                ),
                default=0,
            )
            if accepted([best], rest):
                kind = "taken"
                seen["taken chars"] += len(best)
            elif rest.startswith(best) and word_ends(rest, len(best)):
                kind = "right, one character (saves nothing)"
            elif rest.startswith(best):
                kind = "right, ends inside a word"
            elif right:
                kind = "right word(s), then wrong"
            else:
                kind = "wrong from its first word"
            seen[kind] += 1
    kinds = (
        "taken",
        "right, one character (saves nothing)",
        "right, ends inside a word",
        "right word(s), then wrong",
        "wrong from its first word",
    )
    table = Table(title=f"What was offered and taken ({requests_log})")
    for column in ("domain", "typist", "model", "requests", "offered", *kinds, "length", "taken length"):
        table.add_column(column, justify="left" if column in ("domain", "typist", "model") else "right")
    for (domain, asks, model), seen in sorted(counts.items()):
        offered = seen["offered"] or 1
        table.add_row(
            domain,
            asks,
            model,
            f"{seen['requests']:.0f}",
            f"{seen['offered'] / seen['requests']:.0%}",
            *(f"{seen[kind] / offered:.1%}" for kind in kinds),
            f"{seen['chars'] / offered:.1f}",
            f"{seen['taken chars'] / (seen['taken'] or 1):.1f}",
        )
    Console(width=240).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--domains", default=",".join(DOMAINS))
    parser.add_argument("--holdout", default="blocks,tail", help="held-out splits, comma separated")
    parser.add_argument("--base", default="smollm2-135m")
    parser.add_argument("--max-steps", type=int, help="default: the recipe's (finetune/text.py)")
    parser.add_argument("--eval-chars", type=int, default=4000)
    parser.add_argument("--asks", choices=["key", "word"], default="word")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--versions",
        help="DOMAIN=TAG,...: the table for versions this script trained in earlier runs (a "
        "domain may come twice, one a split), from their metrics; nothing is trained",
    )
    parser.add_argument(
        "--remeasure",
        help="with --versions: the typists (key, word, comma separated) to type each version's "
        "held-out text again with, base and tuned (the version's adapter on the base, as served)",
    )
    parser.add_argument(
        "--excerpts",
        type=lambda numbers: [int(n) for n in numbers.split(",")],
        help="with --remeasure: type only these held-out excerpts (numbers, comma separated; default all)",
    )
    parser.add_argument("--look", type=Path, help="a --remeasure requests log: what was offered and taken")
    args = parser.parse_args()
    if args.look:
        look(args.look)
        return
    trained = [tuple(pair.split("=", 1)) for pair in args.versions.split(",")] if args.versions else []
    from services.autocomplete import model_kinds  # noqa: F401 - registers the causal-lm kind
    from services.core.model_store import resolve

    if args.remeasure:  # the versions' own text files, as they were trained (sha256 checked)
        asks_list = args.remeasure.split(",")
        if not trained or not set(asks_list) <= {"key", "word"}:
            parser.error("--remeasure takes key and/or word, and needs --versions")
        remeasure(trained, asks_list, args)
        return
    sources = build(args.out)
    threads = os.environ.get("MODELPORT_AUTOCOMPLETE_THREADS", "one per core")
    torch_threads = os.environ.get("OMP_NUM_THREADS", "one per core")
    table = Table(
        title=f"Keystroke savings on held-out text, {args.base} base vs LoRA fine-tuned "
        f"(steps: {args.max_steps or 'the recipe'}, typist asks: {args.asks}, llama.cpp threads: {threads}, "
        f"torch threads: {torch_threads})\n"
        f"{describe_machine()}"
    )
    columns = (
        "domain",
        "held out",
        "train KB",
        "steps",
        "training",
        "val perplexity",
        "held-out chars",
        "savings base",
        "savings tuned",
        "relative gain",
        "accepted share",
        "goal",
        "whole job",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "domain" else "right")
    runs = trained or [(d, h) for d in args.domains.split(",") for h in args.holdout.split(",")]
    for name, what in runs:
        tag, seconds = (what, math.nan) if trained else finetune(args.out / name, what, args)
        meta = resolve(tag).info.metadata
        metrics = meta["metrics"]
        # Versions from before --holdout: train.txt, its random tenth validated on, the tail typed.
        holdout = metrics.get("keystroke_eval_text", "tail (--eval-text)")
        train_bytes = meta["dataset"].get("train_bytes", sources[name]["train_bytes"])
        before, after = metrics["keystroke_savings_before"], metrics["keystroke_savings_after"]
        gain = after / before - 1 if before else float("inf")
        table.add_row(
            name,
            holdout,
            f"{train_bytes / 1000:.0f}",
            str(metrics["train_steps"]),
            f"{metrics['train_seconds'] / 60:.1f} min",
            f"{metrics['val_ppl_before']:.1f} -> {metrics['val_ppl_after']:.1f}",
            str(metrics["keystroke_eval_chars"]),
            f"{before:.1%}",
            f"{after:.1%}",
            f"{gain:+.0%}",
            f"{metrics['keystroke_accepted_share_before']:.1%} -> "
            f"{metrics['keystroke_accepted_share_after']:.1%}",
            "met" if gain >= GOAL else "not met",
            f"{(metrics['train_minutes'] if trained else seconds / 60):.1f} min",
        )
        print(f"{name} ({holdout}): {tag} {before:.1%} -> {after:.1%}", flush=True)
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
