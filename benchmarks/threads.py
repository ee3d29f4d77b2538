"""What ``--threads auto`` saves when several autorobust processes train on one machine.

Starts P copies of ``autorobust train demo`` at once, each with ``--threads C`` (torch's default:
one thread per core, C = the cores this process may use) or with ``--threads auto`` (each takes
``max(1, C // P)``), and measures the wall time until all have finished, the CPU time they used
(user + system, from ``getrusage`` of the children) and their mean seconds per epoch (from each
run's ``metrics.json``). Oversubscribed threads spin while they wait for each other: that shows as
CPU time spent for nothing, and as longer epochs. The processes count each other through a private
``AUTOROBUST_RUNTIME_DIR``, so other autorobust processes on the machine do not change the share.
Settings are interleaved and repeated; the table gives medians.

    python benchmarks/threads.py                   # about 10 minutes on 2 busy CPU cores
    python benchmarks/threads.py --update-docs   # and the table in docs/benchmarks.md

Results go to ``benchmarks/results/threads.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import add_update_docs_flag, update_docs

from autorobust.train.threads import available_cores

RESULTS = Path(__file__).resolve().parent / "results"
MARKERS = ("<!-- threads-benchmark:start -->", "<!-- threads-benchmark:end -->")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_together(processes: int, threads: str, epochs: int) -> dict[str, Any]:
    """Train ``processes`` demo runs at once with ``--threads threads``; wall, CPU, s / epoch."""
    with tempfile.TemporaryDirectory() as work:
        env = {
            k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
        }
        env["AUTOROBUST_RUNTIME_DIR"] = str(Path(work) / "processes")
        cpu_before, started = _children_cpu(), time.perf_counter()
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "autorobust.cli",
                    "train",
                    "demo",
                    "--set",
                    f"train.epochs={epochs}",
                    "--run-dir",
                    str(Path(work) / f"run{i}"),
                    "--device",
                    "cpu",
                    "--no-progress",
                    "--threads",
                    threads,
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(processes)
        ]
        for proc in procs:
            _, err = proc.communicate()
            if proc.returncode != 0:
                raise SystemExit(f"a training process failed: {err[-2000:]}")
        wall, cpu = time.perf_counter() - started, _children_cpu() - cpu_before
        per_epoch = [
            json.loads((Path(work) / f"run{i}" / "metrics.json").read_text())["run"][
                "seconds_per_epoch"
            ]
            for i in range(processes)
        ]
    return {"wall_s": wall, "cpu_s": cpu, "s_per_epoch": statistics.mean(per_epoch)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    add_update_docs_flag(parser)
    args = parser.parse_args(argv)
    cores = available_cores()
    settings = {f"torch default ({cores} per process)": str(cores), "auto": "auto"}
    measured: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for repeat in range(args.repeats):
        for processes in args.processes:
            for name, threads in settings.items():
                result = run_together(processes, threads, args.epochs)
                measured.setdefault((processes, name), []).append(result)
                print(f"repeat {repeat}: {processes} x {name}: {result}", flush=True)
    rows = []
    for (processes, name), results in measured.items():
        share = max(1, cores // processes) if settings[name] == "auto" else cores
        rows.append(
            {
                "processes": processes,
                "threads": name,
                "threads_per_process": share,
                **{
                    key: statistics.median(r[key] for r in results)
                    for key in ("wall_s", "cpu_s", "s_per_epoch")
                },
                "runs": results,
            }
        )
    lines = [
        "| processes | threads | threads per process | wall s (all done) | CPU s | s / epoch |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['processes']} | {r['threads']} | {r['threads_per_process']} | "
            f"{r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['s_per_epoch']:.3f} |"
            for r in rows
        ),
    ]
    table = "\n".join(lines)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    note = (
        f"P processes of `autorobust train demo --set train.epochs={args.epochs}` started at "
        f"once on {cores} cores, medians of {args.repeats} interleaved repeats; wall time until "
        f"all have finished (start-up included), CPU time of all of them, mean s / epoch. "
        f"Load average {load:.1f} when it ended (other jobs shared the machine). Measured "
        f"{time.strftime('%Y-%m-%d')}. Reproduce: `python benchmarks/threads.py`."
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "threads.json").write_text(
        json.dumps({"note": note, "python": platform.python_version(), "rows": rows}, indent=2)
        + "\n"
    )
    (args.out / "threads.md").write_text(note + "\n\n" + table + "\n")
    print(note + "\n\n" + table)
    if args.update_docs:
        update_docs(MARKERS, table, note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
