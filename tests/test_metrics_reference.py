"""docs/metrics.md documents every key of ``metrics.json``, checked on real digits runs.

A short run of every training method, ``autorobust evaluate`` and a design write their
``metrics.json``; every key they hold must have a row in docs/metrics.md (a documented mapping
covers the keys under it), and every row must name a key that some run writes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import autorobust
from autorobust.data.relabel import write_relabel_file

DOC = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"
SMALL = ("train.progress=false", "device=cpu", "train.threads=1", "train.epochs=2")

# (bundled config, overrides) of a short run of every training method.
RUNS: dict[str, tuple[str, tuple[str, ...]]] = {
    "erm": ("demo", ("model.options.width=8",)),
    "reweight": ("demo-reweight", ("model.options.width=8", "reweight.plots=false")),
    "autobalance": (
        "digits-lt20-autobalance",
        ("method=autobalance", "bilevel.warmup_epochs=1", "model.options.width=8"),
    ),
    "darts": (
        "csnas-digits",
        (
            "method=darts",
            "model.name=darts",
            "model.options.layers=3",
            "model.options.channels=4",
            "model.options.auxiliary=true",
        ),
    ),
    "pseudo_label": (
        "demo",
        ("method=pseudo_label", "loss.name=logit_adjustment", "model.options.width=8"),
    ),
}

# Rows for keys that none of these runs writes: a loss with group parameters or a noise
# correction, and a loss search on data with group attributes.
NOT_WRITTEN_HERE = {
    "method.learned_loss.num_attributes",
    "method.learned_loss.transition",
    "fairness.equal_opportunity_gap",
    "fairness.worst_group_accuracy",
    "fairness.group_accuracy",
}


def documented() -> dict[str | None, set[str]]:
    """Documented keys by the training method their section is about (None: every run)."""
    keys: dict[str | None, set[str]] = {}
    method = None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            tag = re.search(r"`method: (\w+)`", line)
            method = tag.group(1) if tag else None
        elif line.startswith("| `"):
            first_cell = line.split(" | ")[0]
            keys.setdefault(method, set()).update(re.findall(r"`([^`]+)`", first_cell))
    return keys


def flatten(value: Any, path: str = "") -> set[str]:
    """Key paths of the leaves of ``value``; ``a[].b``: key b of every entry of the list a."""
    if isinstance(value, dict) and value:
        return set().union(*(flatten(v, f"{path}.{k}" if path else k) for k, v in value.items()))
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        return set().union(*(flatten(item, f"{path}[]") for item in value))
    return {path}


def covered(key: str, rows: set[str]) -> bool:
    """``key`` has a row, or lies under a documented mapping, or is an empty list of entries."""
    return any(
        key == row or key.startswith((f"{row}.", f"{row}[]")) or row.startswith(f"{key}[].")
        for row in rows
    )


@pytest.fixture(scope="module")
def metrics(tmp_path_factory) -> dict[str, dict[str, Any]]:
    """``metrics.json`` of each run, by training method, plus ``evaluate`` and ``design``."""
    folder = tmp_path_factory.mktemp("metrics")
    pool = autorobust.build_splits(autorobust.load_config("demo", ["device=cpu"])).train
    relabel = folder / "relabel.npz"  # drops the noisy labels: pseudo_label trains on the rest
    write_relabel_file(
        relabel, labels=np.where(pool.noise_mask, -1, pool.labels), source_index=pool.source_index
    )
    written = {}
    for method, (name, overrides) in RUNS.items():
        extra = [f"data.relabel_file={relabel}"] if method == "pseudo_label" else []
        config = autorobust.load_config(
            name, [*SMALL, *overrides, *extra, f"run_dir={folder / method}"]
        )
        written[method] = autorobust.train_run(config).metrics
    written["evaluate"] = autorobust.evaluate_run(folder / "erm", device="cpu")
    design = autorobust.load_config("demo", [*SMALL, f"run_dir={folder / 'design'}"])
    fixed = autorobust.Design(treatment="transition", loss="cross_entropy", tau=0.0)
    written["design"] = autorobust.run_design(design, fixed=fixed).retrained.metrics
    return written


def test_every_key_a_run_writes_is_documented(metrics) -> None:
    rows = documented()
    assert {"reweight", "autobalance", "darts", "pseudo_label"} <= set(rows)
    assert len(rows[None]) > 50
    for run, values in metrics.items():
        allowed = rows[None] | rows.get(run, set())
        missing = sorted(key for key in flatten(values) if not covered(key, allowed))
        assert not missing, f"{run}: metrics.json keys missing from docs/metrics.md: {missing}"


def test_every_documented_key_is_written_by_some_run(metrics) -> None:
    rows = documented()
    assert "noise_model" in metrics["design"] and "relabel" in metrics["pseudo_label"]["data"]
    assert metrics["autobalance"]["method"]["hyper_log"], "no upper step: nothing documented"
    for method, keys in rows.items():
        runs = [values for run, values in metrics.items() if method in (None, run)]
        written = set().union(*(flatten(values) for values in runs))
        stale = sorted(
            key
            for key in keys - NOT_WRITTEN_HERE
            if not any(covered(real, {key}) for real in written)
        )
        assert not stale, f"docs/metrics.md rows for keys no run writes ({method}): {stale}"


def test_the_reference_states_the_units_of_its_keys() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert "**Accuracies are fractions in [0, 1]**" in text
    for line in text.splitlines():
        if line.startswith("| `"):
            cells = [cell.strip() for cell in line.strip("|").split(" | ")]
            assert len(cells) == 4 and all(cells), line  # key, type, unit ("–": none), meaning
