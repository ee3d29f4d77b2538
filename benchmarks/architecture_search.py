"""Benchmark: CSNAS (DARTS cell search) on balanced and long-tailed Fashion-MNIST.

Two protocols, chosen by the preset (or ``--protocol``):

- ``rank`` (issue 15, ``_csnas_rank_study.py``): random cells trained with labels by two seeds
  (the ground truth and its seed-to-seed ceiling), every fitness's Kendall tau-b against it with a
  bootstrap interval and its CPU time per cell, and TPE searches with the training-free and the
  supervised fitness. Results: ``architecture_rank.{jsonl,json,md}``; the JSON lines are reused
  by later runs (a unit whose key is there is not run again).
- ``search`` (issue 6, ``_csnas_search_study.py``): TPE / random search with the contrastive
  fitness and TPE with the supervised one, hand-written ResNets, the contrastive fitness's rank
  correlation at three proxies and TPE's compute. Results: ``architecture_search.{jsonl,json,md}``.

    python benchmarks/architecture_search.py --preset rank-tiny         # pipeline check, minutes
    python benchmarks/architecture_search.py --preset cpu-rank-2h       # ~2 h on 2 idle CPU cores
    python benchmarks/architecture_search.py --preset gpu-rank --device cuda --workers 8
    python benchmarks/architecture_search.py --preset cpu-25min         # the search protocol
    python benchmarks/architecture_search.py --preset cpu-rank-2h --summarise-only --update-docs

Every finished unit is appended to the protocol's JSON lines at once. ``--deadline-s``, Ctrl-C or
SIGTERM stop the run cleanly: no new unit starts, running units stop at their next epoch, and the
summary is written from what finished. ``--summarise-only`` rebuilds the summary from the JSON
lines; ``--resume`` (search protocol) keeps its finished units and runs the rest.
``--update-docs`` (alias ``--update-readme``) fills the protocol's block of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import _csnas_rank_study as rank_study
import _csnas_search_study as search_study
from _common import add_run_arguments, write_results
from _csnas_common import CONFIGS, read_jsonl
from _csnas_rank_summary import summarise as summarise_rank
from _csnas_search_summary import summarise as summarise_search

RESULTS = Path(__file__).resolve().parent / "results"
PROTOCOLS = {"rank": rank_study, "search": search_study}
PRESETS = {
    **{name: ("rank", p) for name, p in rank_study.PRESETS.items()},
    **{name: ("search", p) for name, p in search_study.PRESETS.items()},
}
RUN_FLAGS = ("device", "workers", "threads", "data_root", "out", "update_docs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None)
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default=None)
    parser.add_argument("--datasets", nargs="+", choices=sorted(CONFIGS), default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="training seeds")
    for flag, kind in (
        ("--unlabeled-images", int),
        ("--search-layers", int),
        ("--search-channels", int),
        ("--fitness-epochs", int),
        ("--fitness-lr", float),
        ("--fitness-batch", int),
        ("--trials", int),
        ("--startup-trials", int),
        ("--eval-layers", int),
        ("--eval-channels", int),
        ("--final-epochs", int),
        ("--final-batch", int),
        ("--train-images", int),
        ("--test-images", int),
        ("--deadline-s", float),
    ):
        parser.add_argument(flag, type=kind, default=None)
    rank = parser.add_argument_group("rank protocol")
    rank.add_argument("--rank-cells", type=int, default=None, help="random cells (>= 30)")
    rank.add_argument("--cell-seed", type=int, default=None, help="draws the random cells")
    rank.add_argument("--rank-fitnesses", nargs="+", default=None)
    rank.add_argument("--search-fitnesses", nargs="+", default=None)
    rank.add_argument("--combinations", nargs="*", default=None, help="e.g. naswot+synflow")
    rank.add_argument("--score-batch", type=int, default=None)
    rank.add_argument("--score-inits", type=int, default=None)
    rank.add_argument("--final-lr", type=float, default=None)
    rank.add_argument(
        "--plain-final",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="final training without auxiliary head, drop-path and cutout",
    )
    search = parser.add_argument_group("search protocol")
    for flag in ("--small-unlabeled-images", "--small-fitness-epochs", "--large-unlabeled-images"):
        search.add_argument(flag, type=int, default=None)
    search.add_argument("--large-fitness-epochs", type=int, default=None)
    search.add_argument("--search-timeout-s", type=float, default=None)
    search.add_argument("--random-trials", type=int, default=None, help="0: skip")
    search.add_argument("--rank-archs", type=int, default=None)
    search.add_argument("--resnets", nargs="+", default=None, help="NAME or NAME@wWIDTH")
    search.add_argument("--resume", action="store_true", help="keep finished units, run the rest")
    parser.add_argument("--summarise-only", action="store_true", help="from the JSON lines")
    add_run_arguments(parser, RESULTS)
    # A preset sets these unless the command line does: no argparse default may hide it.
    parser.set_defaults(device=None, workers=None, threads=None)
    return parser


def resolve(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The protocol and its settings: protocol defaults, then the preset, then explicit flags."""
    protocol, preset = PRESETS[args.preset] if args.preset else (args.protocol or "rank", {})
    if args.protocol and args.protocol != protocol:
        raise SystemExit(f"--preset {args.preset} is a {protocol} preset, not {args.protocol}")
    module = PROTOCOLS[protocol]
    settings = {**module.DEFAULTS, "device": "cpu", **preset}
    for key, value in vars(args).items():
        if value is not None and (key in module.DEFAULTS or key in RUN_FLAGS):
            settings[key] = value
    settings["data_root"] = args.data_root
    settings["out"] = str(args.out)
    if protocol == "search":
        if settings["small_unlabeled_images"] is None:
            settings["small_unlabeled_images"] = max(2, settings["unlabeled_images"] // 4)
        if settings["small_fitness_epochs"] is None:
            settings["small_fitness_epochs"] = max(1, settings["fitness_epochs"] // 2)
    settings["workers"] = settings.get("workers") or 1
    settings["threads"] = settings.get("threads") or 1
    return protocol, settings


def _note(protocol: str, settings: dict, preset: str | None, rows: list[dict], elapsed) -> str:
    s = settings
    device = next((r["device"] for r in rows if r.get("device")), s["device"])
    final = (
        f"final training {s['eval_layers']} cells x {s['eval_channels']} channels, "
        f"{s['final_epochs']} epochs"
        + (f" on {s['train_images']} images" if s["train_images"] else "")
        + (f", {s['test_images']} test images" if s["test_images"] else "")
    )
    proxy = (
        f"search proxy {s['search_layers']} cells x {s['search_channels']} channels, "
        f"{s['fitness_epochs']} epochs on {s['unlabeled_images'] or 'all'} unlabeled images"
    )
    timing = f"{elapsed:.0f} s in all" if elapsed else "time not recorded"
    flag = f" --preset {preset}" if preset else ""
    if protocol == "rank":
        what = (
            f"{s['rank_cells']} random cells, seeds {', '.join(map(str, s['seeds']))}; {proxy}, "
            f"training-free scores on {s['score_batch']} images x {s['score_inits']} "
            f"initialisations; {s['trials']}-trial TPE searches ({s['startup_trials']} random "
            f"start-up); {final}, lr {s['final_lr']}, batch {s['final_batch']}"
            + (", no auxiliary head / drop-path / cutout" if s["plain_final"] else "")
        )
    else:  # the note of the search protocol's results, as it always read
        return (
            f"Fashion-MNIST ({', '.join(s['datasets'])}), N = 4; search proxy "
            f"{s['search_layers']} cells x {s['search_channels']} channels, "
            f"{s['fitness_epochs']} epochs on {s['unlabeled_images']} unlabeled images, "
            f"{s['trials']} trials ({s['startup_trials']} random start-up); {final}"
            f"; {len(s['seeds'])} seed(s); device {device}, {s['workers']} workers, "
            + (f"{elapsed:.0f} s in all" if elapsed else "")
            + f"; measured {time.strftime('%Y-%m-%d')}. Reproduce: "
            f"`python benchmarks/architecture_search.py{flag}`."
        )
    return (
        f"Fashion-MNIST ({', '.join(s['datasets'])}), N = 4; {what}; device {device}, "
        f"{s['workers']} workers; {timing}; measured {time.strftime('%Y-%m-%d')}. Reproduce: "
        f"`python benchmarks/architecture_search.py{flag}`."
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    protocol, settings = resolve(args)
    module = PROTOCOLS[protocol]
    args.out.mkdir(parents=True, exist_ok=True)
    jsonl = args.out / f"{module.NAME}.jsonl"
    started = time.perf_counter()
    if protocol == "rank":
        if not args.summarise_only:
            print(json.dumps(settings), flush=True)
            module.run(settings, jsonl)
        records = [r for r in read_jsonl(jsonl) if "error" not in r and not r.get("stopped")]
        rows = module.study_rows(settings, records)
        elapsed = max((r.get("elapsed_s", 0.0) for r in rows), default=None)
        summary, table = summarise_rank(rows, settings)
    else:
        rows, settings, elapsed = _run_search_protocol(args, settings, jsonl, started)
        summary, table = summarise_search(rows, settings)
    note = _note(protocol, settings, args.preset, rows, elapsed)
    payload = {"settings": settings, "elapsed_s": elapsed, "summary": summary, "rows": rows}
    write_results(
        args.out,
        module.NAME,
        note=note,
        table=table,
        payload=payload,
        markers=module.MARKERS if args.update_docs else None,
    )
    return 0


def _run_search_protocol(args, settings, jsonl, started) -> tuple[list[dict], dict, Any]:
    """The search protocol's run (or its JSON lines): rows, the settings they ran with, time."""
    if args.summarise_only:
        records = read_jsonl(jsonl)
        header = [r for r in records if r.get("unit") == "settings"]
        settings = header[-1]["settings"] if header else settings
        rows = [r for r in records if r.get("unit") != "settings"]
        return rows, settings, header[-1].get("elapsed_s") if header else None
    done: list[dict] = []
    if args.resume:
        done = [r for r in read_jsonl(jsonl) if r.get("unit") != "settings" and "error" not in r]
    with jsonl.open("w", encoding="utf-8") as sink:
        sink.write(json.dumps({"unit": "settings", "settings": settings}) + "\n")
        for row in done:
            sink.write(json.dumps(row) + "\n")
    print(json.dumps(settings), flush=True)
    rows = done + search_study.run(settings, jsonl, done)
    # a resumed run adds the earlier run's wall time (its last row's elapsed_s)
    earlier = max((r.get("elapsed_s", 0.0) for r in done), default=0.0)
    return rows, settings, earlier + time.perf_counter() - started


if __name__ == "__main__":
    sys.exit(main())
