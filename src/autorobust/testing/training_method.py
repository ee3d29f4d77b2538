"""The contract every training method keeps, as a pytest suite to subclass.

A method is anything :func:`~autorobust.experiment.train_run` can train (``method: erm``,
``reweight``, ``autobalance``, ``darts``, or a plugin's). Each subclass names a bundled config (or a
YAML path) and overrides that make it small; the suite then checks, through ``train_run``:

- **exact resume**: a run stopped by Ctrl-C before its last epoch and resumed from the checkpoint
  ends with exactly the checkpoint (model, optimiser, scheduler, the method's own state such as
  V's weights or the learned loss) and the metrics of a run that was never interrupted;
- **seeded determinism**: two runs of one config end bit-identical; another seed ends elsewhere;
- **foreign checkpoint**: ``resume`` refuses a checkpoint written by another configuration.

Example::

    class TestReweighting(TrainingMethodTests):
        config_name = "demo-reweight"
        overrides = ("model.options.width=8", "reweight.plots=false")
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from autorobust.config import ExperimentConfig, load_config
from autorobust.data.splits import Splits
from autorobust.errors import AutorobustError
from autorobust.experiment import RunResult, build_splits, train_run
from autorobust.train.trainer import CHECKPOINT_NAME, EpochRecord, load_checkpoint

__all__ = ["TrainingMethodTests", "assert_same_state"]

# Wall-clock fields differ between any two runs.
_TIMING_KEYS = frozenset({"seconds", "wall_time_s", "seconds_per_epoch"})


def assert_same_state(a: Any, b: Any, where: str = "checkpoint") -> None:
    """Assert that two nested structures of tensors, numbers, strings, lists and dicts are equal:
    tensors bit for bit, floats exactly (NaN equals NaN), wall-clock timings ignored."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), f"{where}: tensor vs {type(b).__name__}"
        assert a.shape == b.shape and a.dtype == b.dtype, f"{where}: {a.shape} vs {b.shape}"
        assert torch.equal(a, b) or (
            a.is_floating_point() and torch.equal(a.isnan(), b.isnan())
            and torch.equal(a.nan_to_num(), b.nan_to_num())
        ), f"{where}: tensors differ"  # fmt: skip
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {set(a) ^ set(b)}"
        for key in a:
            if key not in _TIMING_KEYS:
                assert_same_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), f"{where}: nan vs {b!r}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _stop_after(epochs: int) -> Callable[[EpochRecord], None]:
    def callback(record: EpochRecord) -> None:
        if record.epoch + 1 == epochs:
            raise KeyboardInterrupt  # as Ctrl-C would

    return callback


class TrainingMethodTests:
    """Subclass as ``TestSomething(TrainingMethodTests)`` and set the class attributes.

    Attributes:
        config_name: a bundled config name or a YAML path.
        overrides: ``a.b=value`` overrides that make the run small (digits, a narrow model).
        epochs: epochs of every run (>= 2).
        interrupt_after: the resume test stops its run after this many epochs; None: one before
            the last, so that the method's own state (e.g. after a warm-up) is in the checkpoint.
    """

    config_name: ClassVar[str] = "demo"
    overrides: ClassVar[Sequence[str]] = ()
    epochs: ClassVar[int] = 3
    interrupt_after: ClassVar[int | None] = None

    # Class-scoped fixtures are classmethods: pytest runs them once per class, not per instance
    # (as instance methods they are deprecated since pytest 9.1).
    @pytest.fixture(scope="class")
    @classmethod
    def method_config(cls) -> ExperimentConfig:
        """The subclass's config on the CPU, quiet, with ``epochs`` epochs."""
        return load_config(
            cls.config_name,
            [*cls.overrides, f"train.epochs={cls.epochs}", "train.progress=false", "device=cpu"],
        )

    @pytest.fixture(scope="class")
    @classmethod
    def method_splits(cls, method_config: ExperimentConfig) -> Splits:
        return build_splits(method_config)

    def _run(
        self,
        config: ExperimentConfig,
        splits: Splits,
        run_dir: Path,
        *,
        resume: bool = False,
        callbacks: Sequence[Callable[[EpochRecord], None]] = (),
    ) -> RunResult:
        config = config.model_copy(update={"run_dir": str(run_dir)})
        return train_run(config, resume=resume, callbacks=callbacks, splits=splits)

    def test_resume_is_exact(
        self, method_config: ExperimentConfig, method_splits: Splits, tmp_path: Path
    ) -> None:
        stop = self.epochs - 1 if self.interrupt_after is None else self.interrupt_after
        full = self._run(method_config, method_splits, tmp_path / "full")
        with pytest.raises(KeyboardInterrupt):
            self._run(method_config, method_splits, tmp_path / "cut", callbacks=[_stop_after(stop)])
        assert load_checkpoint(tmp_path / "cut" / CHECKPOINT_NAME)["epoch"] == stop
        resumed = self._run(method_config, method_splits, tmp_path / "cut", resume=True)
        assert_same_state(
            load_checkpoint(tmp_path / "full" / CHECKPOINT_NAME),
            load_checkpoint(tmp_path / "cut" / CHECKPOINT_NAME),
        )
        for key in ("history", "validation", "test", "method"):
            assert_same_state(full.metrics.get(key), resumed.metrics.get(key), f"metrics.{key}")
        assert len(resumed.metrics["history"]) == self.epochs

    def test_seeded_determinism(
        self, method_config: ExperimentConfig, method_splits: Splits, tmp_path: Path
    ) -> None:
        self._run(method_config, method_splits, tmp_path / "a")
        self._run(method_config, method_splits, tmp_path / "b")
        a = load_checkpoint(tmp_path / "a" / CHECKPOINT_NAME)
        assert_same_state(a, load_checkpoint(tmp_path / "b" / CHECKPOINT_NAME))
        other = method_config.model_copy(update={"seed": method_config.seed + 1})
        self._run(other, method_splits, tmp_path / "c")
        c = load_checkpoint(tmp_path / "c" / CHECKPOINT_NAME)
        differs = [name for name, t in a["model"].items() if not torch.equal(t, c["model"][name])]
        assert differs, "another seed ended with the same weights"

    def test_refuses_a_foreign_checkpoint(
        self, method_config: ExperimentConfig, method_splits: Splits, tmp_path: Path
    ) -> None:
        with pytest.raises(KeyboardInterrupt):
            self._run(method_config, method_splits, tmp_path, callbacks=[_stop_after(1)])
        other = method_config.model_copy(update={"seed": method_config.seed + 1})
        with pytest.raises(AutorobustError, match="different configuration"):
            self._run(other, method_splits, tmp_path, resume=True)
