"""The ```python blocks of README's "Python API" section run as they stand and do what they say.

Each block runs in a fresh namespace in an empty working directory (its run directories are
relative), then a check looks at what it left behind and printed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import autorobust

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    """The code of every ```python block between "## Python API" and the next section."""
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## Python API\n")
    end = text.index("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.DOTALL)


def _run(namespace: dict[str, Any], printed: str) -> None:
    assert printed.splitlines()[0] == "10 454 [97 78 65 49 41 34 28 22 20 20]"  # as README says
    assert 0.0 <= namespace["result"].test["balanced_accuracy"] <= 1.0
    metrics = namespace["metrics"]
    assert metrics["run"]["epochs_completed"] == 5  # evaluate_run wrote what was read back
    assert len(metrics["history"]) == 5
    assert {"config.yaml", "data.json", "checkpoint.pt", "metrics.json"} <= {
        path.name for path in Path("runs/api/train").iterdir()
    }


def _searches(namespace: dict[str, Any], printed: str) -> None:
    assert isinstance(namespace["outcome"], autorobust.SearchOutcome)
    for kind in ("baseline", "reweighter", "loss", "architecture"):
        folder = Path("runs/api") / kind
        assert (folder / "study.db").is_file(), kind
        assert (folder / "best" / "metrics.json").is_file(), kind
    assert Path("runs/api/architecture/best_genotype.json").is_file()
    assert Path("runs/api/loss/learned_loss.json").is_file()


def _design(namespace: dict[str, Any], printed: str) -> None:
    outcome = namespace["outcome"]
    assert outcome.report == Path("runs/api/design/design.md") and outcome.report.is_file()
    assert outcome.chosen["name"] in printed


def _errors(namespace: dict[str, Any], printed: str) -> None:
    assert printed == (
        "--set shift.rho=0.5: shift.rho: Input should be greater than or equal to 1 (got 0.5)\n"
    )


# One check per block, in README's order.
CHECKS: list[Callable[[dict[str, Any], str], None]] = [_run, _searches, _design, _errors]


def test_every_block_has_a_check() -> None:
    assert len(python_blocks()) == len(CHECKS), (
        "README's Python API section has another number of ```python blocks: give each one a "
        "check in CHECKS"
    )


@pytest.mark.parametrize("index", range(len(CHECKS)), ids=[c.__name__[1:] for c in CHECKS])
def test_block_runs_and_does_what_it_says(index: int, tmp_path, monkeypatch, capsys) -> None:
    code = python_blocks()[index]
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "readme_python_api"}
    exec(compile(code, f"README.md, Python API, block {index + 1}", "exec"), namespace)
    CHECKS[index](namespace, capsys.readouterr().out)
