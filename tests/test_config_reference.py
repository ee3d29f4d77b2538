"""docs/config.md is what scripts/config_reference.py generates from the config models now."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Literal

from pydantic import Field

from autorobust._strict import StrictModel
from autorobust.config import ExperimentConfig

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "config_reference.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("config_reference", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


reference = _load_script()


def _rows(text: str) -> dict[str, list[str]]:
    """Table rows by key path: {"train.lr": ["float, > 0", "`0.05`", "Base learning ..."]}."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| `"):
            cells = [cell.strip() for cell in line.strip("|").split(" | ")]
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def _leaf_keys(model: type[StrictModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        keys.append(key)
        if isinstance(field.annotation, type) and issubclass(field.annotation, StrictModel):
            keys.extend(_leaf_keys(field.annotation, f"{key}."))
    return keys


def test_docs_config_md_is_up_to_date() -> None:
    written = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert written == reference.render(), (
        "docs/config.md differs from the config models: run `python scripts/config_reference.py` "
        "and commit docs/config.md"
    )


def test_every_key_of_the_config_has_a_row() -> None:
    rows = _rows(reference.render())
    assert sorted(rows) == sorted(_leaf_keys(ExperimentConfig))
    # The keys the issue found documented nowhere, with their meaning, type and default.
    for key in ("search.storage", "search.study_name", "train.progress", "shift.noise_matrix"):
        assert rows[key][2] != reference.UNDOCUMENTED, key
    assert "sqlite:///<run_dir>/study.db" in rows["search.storage"][2]
    assert rows["train.lr"][:2] == ["float, > 0", "`0.05`"]
    assert rows["train.augment"][0] == "section ([`train.augment`](#trainaugment))"
    assert rows["device"][0] == "`auto`, `cpu` or `cuda`"
    assert rows["data.unlabeled_fraction"][0] == "float, in (0, 1]"
    # A default that a validator fills in from another key says so.
    assert rows["search.seed"][1] == "`null`; left out: see meaning"


class _Example(StrictModel):
    """An example section."""

    documented: int = Field(3, ge=1, le=9)
    """Has a ``docstring`` with a | pipe."""
    bare: Literal["a", "b"] | None = None
    listed: list[float] = Field(default_factory=lambda: [0.5], min_length=1)
    """Listed."""


def test_fields_are_rendered_with_type_bounds_default_and_docstring() -> None:
    rows = _rows(reference.render(_Example))
    assert rows["documented"] == ["int, in [1, 9]", "`3`", "Has a `docstring` with a \\| pipe."]
    assert rows["bare"] == ["`a` or `b` or null", "`null`", reference.UNDOCUMENTED]
    assert rows["listed"] == ["list of float, at least 1 item", "`[0.5]`", "Listed."]
    assert reference.render(_Example).endswith("Keys without a docstring: 1.\n")


def test_check_mode_fails_on_a_stale_file(tmp_path: Path, capsys) -> None:
    out = tmp_path / "config.md"
    assert reference.main(["--out", str(out)]) == 0
    assert reference.main(["--check", "--out", str(out)]) == 0
    out.write_text(out.read_text().replace("Base learning rate", "Learning rate"))
    assert reference.main(["--check", "--out", str(out)]) == 1
    assert "run `python scripts/config_reference.py`" in capsys.readouterr().err
