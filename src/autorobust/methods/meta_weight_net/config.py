"""Config section ``reweight``: Meta-Weight-Net sample reweighting and its architecture search."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from autorobust._strict import StrictModel

__all__ = ["ReweightConfig", "ReweightSearchConfig"]

# What V reads (``reweight.input``): each sample's loss, the model's features, or both.
ReweightInput = Literal["loss", "features", "loss+features"]


class ReweightSearchConfig(StrictModel):
    """The TPE search space over V (paper 002) used by ``autorobust search reweighter``."""

    max_hidden_layers: int = Field(4, ge=0, le=4)
    """Hidden layers are searched in 0..max_hidden_layers."""
    min_hidden_layers: int = Field(0, ge=0, le=4)
    """Fewest hidden layers a searched V has."""
    width_range: tuple[int, int] = (8, 256)
    """(low, high) of each hidden layer's width, log-uniform integers."""
    inputs: list[ReweightInput] = Field(
        default_factory=lambda: list[ReweightInput](["loss", "features", "loss+features"]),
        min_length=1,
    )
    """What a searched V may read (``reweight.input``); one value: not searched."""
    layers: list[str] | None = None
    """Candidate intermediate layers for feature inputs; None: every layer the model names."""
    class_aware: list[bool] = Field(default_factory=lambda: [False, True], min_length=1)
    """Whether V gets a class embedding; both values: searched."""
    class_embedding: int = Field(8, ge=1)
    """Embedding width used when a trial is class-aware."""
    lr_range: tuple[float, float] = (1e-4, 1e-2)
    """(low, high) of V's learning rate, log-uniform."""

    @model_validator(mode="after")
    def _consistent(self) -> ReweightSearchConfig:
        if self.min_hidden_layers > self.max_hidden_layers:
            raise ValueError(
                f"min_hidden_layers ({self.min_hidden_layers}) must not exceed "
                f"max_hidden_layers ({self.max_hidden_layers})"
            )
        low, high = self.width_range
        if not 1 <= low <= high:
            raise ValueError(
                f"width_range must be (low, high) with 1 <= low <= high, got {low, high}"
            )
        low_lr, high_lr = self.lr_range
        if not 0.0 < low_lr <= high_lr:
            raise ValueError(
                f"lr_range must be (low, high) with 0 < low <= high, got {low_lr, high_lr}"
            )
        return self


class ReweightConfig(StrictModel):
    """Meta-Weight-Net sample reweighting (``method: reweight``) and its search.

    The defaults are the original MW-Net (Shu et al. 2019): V = 1-100-1 ReLU MLP on the per-sample
    loss, Adam with lr 1e-3 and weight decay 1e-4 (the authors' noise code), a meta-step every
    training step through the whole classifier, and the weighted loss normalised by Σ v_i.
    """

    hidden: list[int] = Field(default_factory=lambda: [100], max_length=4)
    """Widths of V's hidden layers (0 to 4 layers)."""
    activation: Literal["relu", "tanh", "elu", "gelu"] = "relu"
    """Nonlinearity after each of V's hidden layers."""
    input: ReweightInput = "loss"
    """What V reads: the per-sample loss, pooled features of ``feature_layer``, or both."""
    feature_layer: str | None = None
    """Intermediate layer of the classifier (``Classifier.intermediate_layers``) V reads."""
    class_embedding: int = Field(0, ge=0)
    """Width of a learned embedding of the observed label fed to V (CMW-Net-like); 0: off."""
    lr: float = Field(1e-3, gt=0.0)
    """Learning rate of V's optimiser."""
    weight_decay: float = Field(1e-4, ge=0.0)
    """Weight decay of V's optimiser."""
    optimizer: Literal["adam", "sgd"] = "adam"
    """Adam as in the authors' noise code; SGD (momentum 0.9) as in their imbalance code."""
    normalize: bool = True
    """Weighted loss Σ v_i ℓ_i / Σ v_i (the paper); False: the mean of v_i ℓ_i (a code option)."""
    meta_interval: int = Field(1, ge=1)
    """Update V every k-th training step; the steps between reuse the last V (cheaper). With
    ``meta_scope`` full, raise ``lr`` k-fold: Adam moves V by about ``lr`` per update, so k times
    fewer updates move it k times less far (Fashion-MNIST, ρ = 100, 40% symmetric noise, the
    whole pool, seed 0: k = 4 at lr 1e-3 76.3% balanced, at 4e-3 79.3%, k = 1 at 1e-3 81.0%;
    docs/benchmarks.md has three seeds and a second noise)."""
    meta_scope: Literal["full", "head"] = "full"
    """Virtual step through every classifier parameter, or only the last layer ``head``."""
    meta_gradient: Literal["unrolled", "jvp"] = "unrolled"
    """How the full-scope meta-gradient is computed; both are exact and equal (tested). "unrolled":
    autograd through the virtual step (create_graph, reverse-over-reverse), the textbook way;
    "jvp": the chain rule through the weights with one forward-mode pass instead. Measured on 2
    CPU cores (Fashion-MNIST, small_cnn) both cost about 3.9x a CE epoch; on tiny models "jvp" is
    slower (functorch overhead)."""
    meta_batch_size: int | None = Field(None, ge=1)
    """Meta batch drawn from the clean meta set; default ``train.batch_size``."""
    plots: bool = True
    """Write the weight plots into the run directory after training."""
    search: ReweightSearchConfig = Field(default_factory=ReweightSearchConfig)

    @model_validator(mode="after")
    def _consistent(self) -> ReweightConfig:
        if any(width < 1 for width in self.hidden):
            raise ValueError(f"hidden widths must be >= 1, got {self.hidden}")
        if self.input != "loss" and not self.feature_layer:
            raise ValueError(f"input {self.input!r} needs feature_layer (e.g. block3)")
        if self.input == "loss" and self.feature_layer is not None:
            raise ValueError("feature_layer is only used with input 'features' or 'loss+features'")
        return self
