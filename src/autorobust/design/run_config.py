"""The config that trains a design: the user's config with the design's model, loss family and
noise treatment, each family and treatment adding its own part (design/loss_families.py,
design/treatments/)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autorobust.config import ExperimentConfig, validate_config
from autorobust.design.loss_families import loss_family
from autorobust.design.space import REFERENCE_DESIGNS, Design
from autorobust.design.treatments import treatment

__all__ = ["PROBE_DESIGN", "design_run_config"]

PROBE_DESIGN = REFERENCE_DESIGNS[0]
"""The probe's recipe (no treatment, logit adjustment): the first design of every study."""


def _quiet(config: ExperimentConfig, *, epochs: int, run_dir: Path) -> dict[str, Any]:
    raw = config.to_dict()
    raw["run_dir"] = str(run_dir)
    raw["train"]["epochs"] = epochs
    raw["train"]["warmup_epochs"] = min(raw["train"]["warmup_epochs"], epochs - 1)
    raw["train"]["progress"] = False
    return raw


def design_run_config(
    config: ExperimentConfig,
    design: Design,
    *,
    epochs: int,
    run_dir: Path,
    noise_model_file: Path | None = None,
    relabel_file: Path | None = None,
) -> ExperimentConfig:
    """The config that trains ``design`` for ``epochs`` epochs in ``run_dir``.

    ``transition`` needs ``noise_model_file``; ``selection`` needs ``relabel_file``.
    """
    raw = _quiet(config, epochs=epochs, run_dir=run_dir)
    raw["method"] = "erm"
    # The probe's recipe records every sample's margin and loss per epoch: the probe is its
    # run's first epochs, and the dynamics detectors read them.
    raw["train"]["record_dynamics"] = design == PROBE_DESIGN
    if design.architecture != "fixed":
        arch = config.architecture
        raw["model"] = {
            "name": "darts",
            "options": {
                "genotype": design.architecture,
                "layers": arch.eval_layers,
                "channels": arch.eval_channels,
                "auxiliary": False,
            },
        }
    # The loss family first (its loss, and the method it brings); then the treatment, which may
    # replace the loss (forward correction) or the method (MW-Net, the pseudo-label loss).
    family = loss_family(design.loss)
    family.configure(raw, design, epochs=epochs)
    treatment(design.treatment).configure(
        raw, design, loss=family, noise_model_file=noise_model_file, relabel_file=relabel_file
    )
    return validate_config(raw, where=f"design {design.describe()}")
