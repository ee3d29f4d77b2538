"""What the stages of :func:`~autorobust.design.pipeline.run_design` share: :class:`DesignRun`
(the config, the data, the probe's outputs, the noise models in use, the cost so far), the names
of the run folder's noise-model files, and the small helpers every stage uses."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

from autorobust._io import atomic_write
from autorobust.config import ExperimentConfig
from autorobust.data.splits import Splits
from autorobust.design.space import Design
from autorobust.methods.glc.noise_model import NoiseModel
from autorobust.methods.sample_selection import ProbeOutputs

NOISE_MODEL_NAME = "noise_model.json"


SECOND_LOOK_NAME = "noise_model_second_look.json"


AVERAGE_NAME = "noise_model_average.json"  # the probe's and the second look's, once taken


@dataclass
class DesignRun:
    """What the stages share: the config, the data, the probe's outputs and the noise model."""

    config: ExperimentConfig
    splits: Splits
    run_dir: Path
    probe_epochs: int
    trial_epochs: int
    probe: ProbeOutputs | None = None
    noise_model: NoiseModel | None = None
    probe_noise_model: NoiseModel | None = None
    second_look: NoiseModel | None = None
    cost: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def reference_cost(self) -> float:
        """Sample-epochs of one training of the configured model on the whole pool (budget 1)."""
        return float(len(self.splits.train) * self.config.train.epochs)

    @property
    def noise_model_file(self) -> Path:
        """The file of the noise model in use: the probe's, then (once the second look is
        taken) the average of the two."""
        if self.second_look is not None:
            return self.run_dir / AVERAGE_NAME
        return self.run_dir / NOISE_MODEL_NAME

    def selection_file(self, design: Design) -> Path:
        """The relabel file of a selection design (one per distinct selection setting)."""
        key = json.dumps(
            [design.detector, design.rule, design.quantile, design.relabel,
             design.relabel_confidence, design.relabel_needs_prototype]
        )  # fmt: skip
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        return self.run_dir / "selections" / f"selection-{digest}.npz"


def stage_epochs(config: ExperimentConfig) -> tuple[int, int]:
    """(probe epochs, trial epochs): a third of ``train.epochs`` by default (rounded up)."""
    design = config.design
    probe = design.probe_epochs or max(1, math.ceil(config.train.epochs / 3))
    return probe, design.trial_epochs or probe


def copy_once(source: Path, target: Path) -> None:
    """Copy the file ``source`` to ``target`` (its folder created), atomically, unless
    ``target`` exists: a checkpoint another run starts from."""
    if target.is_file():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, lambda handle: handle.write(source.read_bytes()))


def sample_epochs_spent(state: DesignRun) -> float:
    """Sample-epochs spent so far, every stage's (the ``*sample_epochs`` entries of the cost)."""
    return sum(v for k, v in state.cost.items() if k.endswith("sample_epochs"))
