"""What the benchmark scripts share: running jobs in worker processes and filling the tables of
docs/benchmarks.md."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

# The page whose marked blocks (``<!-- NAME:start -->`` ... ``<!-- NAME:end -->``) the scripts fill.
BENCHMARKS_DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def run_jobs(
    function: Callable[[dict], dict], jobs: list[dict], workers: int
) -> Iterator[dict[str, Any]]:
    """Yield ``function(job)`` for every job, in order; ``workers > 1`` uses spawned processes.

    Spawned (not forked) workers: each initialises CUDA and torch's thread pool on its own.
    """
    if workers <= 1:
        yield from map(function, jobs)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, max(len(jobs), 1)), mp_context=context) as pool:
        yield from pool.map(function, jobs)


def add_run_arguments(parser: argparse.ArgumentParser, results: Path) -> None:
    """The flags the training benchmarks share: device, workers, threads, data root, output
    folder (default ``results``) and --update-docs."""
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--workers", type=int, default=1, help="parallel processes")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per process")
    parser.add_argument(
        "--data-root", default=None, help="Fashion-MNIST folder (default: config's)"
    )
    parser.add_argument("--out", type=Path, default=results)
    add_update_docs_flag(parser)


def add_update_docs_flag(parser: argparse.ArgumentParser) -> None:
    """``--update-docs`` (``args.update_docs``): put the table into docs/benchmarks.md.
    ``--update-readme`` is its old name, kept as an alias."""
    parser.add_argument(
        "--update-docs",
        "--update-readme",
        dest="update_docs",
        action="store_true",
        help="write the table between its markers in docs/benchmarks.md",
    )


def run_overrides(job: dict, run_dir: str) -> list[str]:
    """Config overrides every benchmark run shares: ``job``'s seed, device, epochs, threads (if
    set), data root (if set) and symmetric noise rate (0: no noise), a quiet trainer, and
    ``run_dir``."""
    overrides = [
        f"seed={job['seed']}",
        f"run_dir={run_dir}",
        f"device={job['device']}",
        f"train.epochs={job['epochs']}",
        "train.progress=false",
    ]
    if job.get("threads"):
        # Every training run sets torch's thread count from train.threads (default auto).
        overrides.append(f"train.threads={job['threads']}")
    if job["data_root"]:
        overrides.append(f"data.options.root={job['data_root']}")
    if job["noise"] == 0:
        overrides += ["shift.noise=none", "shift.noise_rate=0"]
    else:
        overrides += ["shift.noise=symmetric", f"shift.noise_rate={job['noise']}"]
    return overrides


def earlier_rows(path: Path | None, jobs: list[dict], key: Callable[[dict], tuple]) -> list[dict]:
    """Rows of an earlier results JSON (``{"rows": [...]}`` or a bare list) at ``path`` whose
    ``key`` no job of this run recomputes; ``[]`` without a path. Lets a run complete or re-measure
    some cells of a table and keep the rest."""
    if path is None:
        return []
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise SystemExit(f"--rows-from {path}: cannot read it as JSON ({error})") from None
    rows = earlier["rows"] if isinstance(earlier, dict) else earlier
    recomputed = {key(job) for job in jobs}
    return [row for row in rows if key(row) not in recomputed]


def update_docs(markers: tuple[str, str], table: str, note: str) -> None:
    """Replace the block of docs/benchmarks.md between ``markers`` by ``note`` and ``table``.

    Each pair of markers must be there exactly once."""
    text = BENCHMARKS_DOC.read_text(encoding="utf-8")
    start, end = markers
    if text.count(start) != 1 or text.count(end) != 1:
        raise SystemExit(f"{BENCHMARKS_DOC}: markers {start} / {end} not found exactly once")
    block = f"{start}\n{note}\n\n{table}\n{end}"
    pattern = re.escape(start) + ".*?" + re.escape(end)
    BENCHMARKS_DOC.write_text(re.sub(pattern, lambda _: block, text, flags=re.S), encoding="utf-8")


def doc_link(path: Path) -> str:
    """``path`` as a link from docs/benchmarks.md (relative where it can be)."""
    try:
        return os.path.relpath(path.resolve(), BENCHMARKS_DOC.parent)
    except ValueError:  # another drive (Windows)
        return str(path.resolve())


def write_results(
    out: Path,
    name: str,
    *,
    note: str,
    table: str,
    payload: dict[str, Any],
    markers: tuple[str, str] | None = None,
) -> None:
    """Write ``out/NAME.json`` (``note``, the Python version and ``payload``) and ``out/NAME.md``
    (note and table), print the table and, given ``markers``, put it into docs/benchmarks.md."""
    out.mkdir(parents=True, exist_ok=True)
    record = {"note": note, "python": platform.python_version(), **payload}
    (out / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / f"{name}.md").write_text(note + "\n\n" + table + "\n")
    print(table)
    if markers is not None:
        update_docs(markers, table, note)
