"""Config section ``architecture``: CSNAS, the label-free DARTS cell search (Nguyen & Chang).

Defaults are the paper's (paper 000, §IV-A and appendix A/B) unless a comment says otherwise. The
search's sampler, trial budget, TPE start-up trials, ``n_ei_candidates`` and ``gamma`` live in the
``search`` section; the final training's optimiser, epochs and batch size in ``train``.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, model_validator

from autorobust._strict import StrictModel

__all__ = ["FITNESS_NAMES", "ArchitectureConfig", "FitnessName"]

FitnessName = Literal["contrastive", "simclr", "supervised", "naswot", "synflow", "jacob_cov"]
FITNESS_NAMES: tuple[str, ...] = get_args(FitnessName)
"""The fitnesses ``architecture.fitness`` and ``--fitness`` accept (``methods/csnas/fitness``)."""


class ArchitectureConfig(StrictModel):
    """CSNAS: the DARTS cell search space, the label-free fitness and the final training."""

    nodes: int = Field(4, ge=1, le=8)
    """N, intermediate nodes per cell: a cell vector has N (N + 3) / 2 edges (14 for N = 4, 20 for
    N = 5)."""
    search_layers: int = Field(8, ge=2)
    """Cells of a candidate network during the search (paper: 8)."""
    search_channels: int = Field(16, ge=1)
    """Initial channels of a candidate network (METHODS: 16; the paper's appendix says 32)."""
    eval_layers: int = Field(20, ge=2)
    """Cells of the network the best genotype is trained as, from scratch with labels."""
    eval_channels: int = Field(36, ge=1)
    """Initial channels of the final network (paper: 36, about 3 M parameters on CIFAR-10)."""

    fitness: FitnessName = "synflow"
    """How a candidate is scored (lower is better): a training-free, label-free score of the
    untrained candidate, negated (``synflow``, the default, ``naswot``, ``jacob_cov``); the PIRL
    loss of Eq. (3) after training on the unlabeled view (``contrastive``, the paper's, which the
    bundled ``csnas-*`` configs set); SimCLR's NT-Xent instead; or the paper's ablation, the
    validation error (1 - balanced accuracy on the meta split) after supervised training on the
    same images. The default was chosen by the rank study of benchmarks/architecture_search.py
    (docs/benchmarks.md, "Which fitness orders cells"): over 30 random cells on balanced and
    long-tailed Fashion-MNIST, synflow's Kendall tau-b with the trained accuracy was the highest
    of the label-free fitnesses with an interval above 0 on both, at about 0.2 CPU-s per cell."""
    fitness_epochs: int = Field(5, ge=1)
    """Training epochs of every candidate (the same budget for all; the paper does not state it).
    ``search.trial_epochs`` is not used by this search."""
    batch_size: int = Field(150, ge=2)
    """K, images per fitness mini-batch (paper: 150, hence M (K - 1) = 298 negatives)."""
    lr: float = Field(0.001, gt=0.0)
    """Momentum-SGD learning rate of the fitness training (paper appendix A: 0.001)."""
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    """Momentum of the fitness training's SGD."""
    weight_decay: float = Field(0.0, ge=0.0)
    """Weight decay of the fitness training's SGD."""

    views: int = Field(2, ge=1)
    """M, augmented views per image (paper: 2); SimCLR uses exactly 2."""
    tau: float = Field(0.07, gt=0.0)
    """Temperature of the cosine similarity in Eq. (1) (paper, from PIRL: 0.07)."""
    lambda_weight: float = Field(0.5, ge=0.0, le=1.0)
    """lambda of Eq. (3): weight of the views' term L_NCE(r, z^t); 1 - lambda weighs L_NCE(r, z)."""
    projection_dim: int = Field(128, ge=1)
    """p, output width of the projection heads g and l (paper: 128)."""
    projection_hidden: int | None = Field(None, ge=1)
    """Hidden width of the two-layer heads g and l; None: the encoder's feature width."""
    bank_momentum: float = Field(0.5, ge=0.0, lt=1.0)
    """Memory bank r_i <- normalise(m r_i + (1 - m) z_i) after each step (PIRL's m = 0.5)."""
    negatives: Literal["batch", "bank"] = "batch"
    """``batch``: the other images' M (K - 1) view projections of the mini-batch (paper §III-B);
    ``bank``: ``bank_negatives`` memory-bank entries drawn per step, as PIRL's code does."""
    bank_negatives: int = Field(4096, ge=1)
    """Drawn bank negatives per step with ``negatives: bank`` (at most the subset size - 1)."""
    simclr_tau: float = Field(0.5, gt=0.0)
    """Temperature of SimCLR's NT-Xent (Chen et al. 2020: 0.5)."""
    score_batch: int = Field(128, ge=2)
    """Training-free fitnesses: unlabeled images in the batch NASWOT and the Jacobian covariance
    score (Mellor et al.: 128; at most the unlabeled view's size)."""
    score_inits: int = Field(3, ge=1)
    """Training-free fitnesses: initialisations of the candidate whose scores are averaged."""
    view_crop_padding: int = Field(2, ge=0)
    """Views: random crop after zero padding by this many pixels (random cropping, §III-B)."""
    view_hflip: bool = True
    """Views: random horizontal flip (turn off for digits)."""
    view_jitter: float = Field(0.4, ge=0.0, lt=1.0)
    """Views: colour-jitter strength (brightness, contrast, saturation)."""
    view_grayscale_p: float = Field(0.2, ge=0.0, le=1.0)
    """Views: probability of conversion to grayscale (RGB only)."""

    drop_path: float = Field(0.2, ge=0.0, lt=1.0)
    """Final training: drop-path probability, raised linearly from 0 over the epochs (DARTS)."""
    auxiliary_weight: float = Field(0.4, ge=0.0)
    """Final training: weight of the auxiliary head's loss at 2/3 depth; 0 builds no head."""
    grad_clip: float | None = Field(5.0, gt=0.0)
    """Final training: gradient-norm clipping (DARTS: 5); None disables it."""
    cutout: int | None = Field(None, ge=0)
    """Final training: cutout side (paper: 16 on 32 x 32 CIFAR); None keeps train.augment.cutout."""

    @model_validator(mode="after")
    def _consistent(self) -> ArchitectureConfig:
        if self.fitness == "simclr" and self.views != 2:
            raise ValueError(f"fitness 'simclr' contrasts exactly 2 views, got views={self.views}")
        return self
