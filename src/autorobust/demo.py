"""``autorobust demo``: the bundled digits under long tail + label noise, baselines and searches.

Runs in about a minute on 2 CPU cores and needs no files: it trains the bundled ``demo`` config with
cross-entropy and with logit adjustment, runs a short TPE search over the baseline losses, then
``autorobust design`` (a probe, the noise model, a study of composed designs under a budget of 3
trainings, the retraining), and prints (and writes to ``RUN_DIR/summary.md``) a table of their
test metrics and where the design's report is.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from autorobust._io import write_text
from autorobust.config import load_config
from autorobust.design.pipeline import run_design
from autorobust.experiment import build_splits, train_run
from autorobust.search.baseline import run_search

__all__ = ["run_demo"]


def _row(name: str, metrics: dict[str, Any]) -> str:
    test = metrics["test"]
    return (
        f"| {name} | {100 * test['balanced_accuracy']:.1f} "
        f"| {100 * test['worst_class_accuracy']:.1f}"
        f" | {100 * test['accuracy']:.1f} | {metrics['run']['wall_time_s']:.1f} |"
    )


def run_demo(run_dir: Path, *, progress: bool = True, threads: int | str | None = None) -> str:
    """Run the demo into ``run_dir``; return the markdown summary table (also printed).

    ``threads``: torch's CPU threads (an integer or ``"auto"``); None keeps the config's
    ``train.threads``.
    """
    overrides = [f"run_dir={run_dir}", f"train.progress={str(progress).lower()}"]
    if threads is not None:
        overrides.append(f"train.threads={threads}")
    config = load_config("demo", overrides)
    splits = build_splits(config)
    summary = splits.summary()
    print(
        f"digits: {summary['train_size']} training images after a long tail (rho "
        f"{config.shift.rho:g}) and {100 * config.shift.noise_rate:.0f}% symmetric noise, "
        f"{summary['meta_size']} clean meta images, {summary['test_size']} test images"
    )
    rows = []
    for loss in ("cross_entropy", "logit_adjustment"):
        run = config.model_copy(
            update={
                "run_dir": str(run_dir / loss),
                "loss": config.loss.model_copy(update={"name": loss}),
            }
        )
        print(f"training {loss} ...")
        # the demo's runs are replaced each time it runs
        rows.append(_row(loss, train_run(run, splits=splits, overwrite=True).metrics))
    print(f"searching the baseline losses ({config.search.n_trials} TPE trials) ...")
    search_config = config.model_copy(update={"run_dir": str(run_dir / "search")})
    outcome = run_search(search_config, default_study_name="demo-baseline", splits=splits)
    assert outcome.retrained is not None  # retrain=True
    best_loss = outcome.best["params"]["loss"]
    rows.append(_row(f"searched ({best_loss})", outcome.retrained.metrics))
    print("designing: probe, noise model, a study of composed designs, finalists ...")
    design_config = config.model_copy(update={"run_dir": str(run_dir / "design")})
    started = time.perf_counter()
    designed = run_design(design_config, default_study_name="demo-design", splits=splits)
    assert designed.retrained is not None  # retrain=True
    metrics = dict(designed.retrained.metrics)
    metrics["run"] = {**metrics["run"], "wall_time_s": time.perf_counter() - started}
    rows.append(_row(f"designed ({designed.final or designed.chosen['name']})", metrics))
    table = "\n".join(
        [
            "| method | balanced acc. % | worst-class acc. % | accuracy % | wall time s |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )
    write_text(run_dir / "summary.md", table + "\n")
    print(table)
    print(f"runs written under {run_dir}; the design's report: {designed.report}")
    return table
