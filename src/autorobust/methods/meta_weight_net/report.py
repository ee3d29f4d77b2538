"""Plots of a Meta-Weight-Net run: the learned weight against the loss, and clean vs noisy weights.

Both read what :class:`~autorobust.methods.meta_weight_net.trainer.ReweightingTrainer` recorded in
the last epoch (``sample_weights.npz``) and the curves of its ``extra_metrics``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from autorobust.report.plots import save_figure

__all__ = ["reweight_plots", "weight_distribution_plot", "weight_vs_loss_plot"]

WEIGHT_VS_LOSS_NAME = "weight_vs_loss.png"
WEIGHT_DISTRIBUTION_NAME = "weight_distribution.png"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def weight_vs_loss_plot(metrics: dict[str, Any], arrays: dict[str, np.ndarray], path: Path) -> Path:
    """V(ℓ) on a loss grid (one line per class when class-aware) over the recorded (ℓ_i, v_i).

    Args:
        metrics: the trainer's ``extra_metrics`` (``weight_vs_loss``, ``binned_weight_vs_loss``).
        arrays: ``weights`` and ``losses`` float (N,) (NaN where not recorded), ``noise_mask``
            bool (N,) optional.
        path: the PNG to write.
    """
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 4))
    weights, losses = arrays["weights"], arrays["losses"]
    seen = np.isfinite(weights)
    noise = arrays.get("noise_mask")
    if noise is not None:
        for mask, label, color in ((~noise & seen, "clean", "C0"), (noise & seen, "noisy", "C3")):
            axes.scatter(losses[mask], weights[mask], s=3, alpha=0.25, color=color, label=label)
    else:
        axes.scatter(losses[seen], weights[seen], s=3, alpha=0.25, color="C0", label="samples")
    curve = metrics.get("weight_vs_loss") or {}
    if "per_class" in curve:
        for c, values in enumerate(curve["per_class"]):
            axes.plot(
                curve["loss"], values, lw=1.2, color=plt.cm.tab10(c % 10), label=f"V, class {c}"
            )
    elif curve:
        axes.plot(curve["loss"], curve["weight"], lw=2, color="k", label="V(loss)")
    binned = metrics.get("binned_weight_vs_loss")
    if binned and not curve:
        xs = [x for x, y in zip(binned["loss"], binned["weight"], strict=True) if y is not None]
        ys = [y for y in binned["weight"] if y is not None]
        axes.plot(xs, ys, lw=2, color="k", label="mean weight per loss bin")
    axes.set_xlabel("training loss (last epoch)")
    axes.set_ylabel("weight v")
    axes.set_title(f"learned weight vs loss ({metrics.get('spec_name', 'MW-Net')})")
    axes.legend(loc="best", fontsize=7, markerscale=3)
    return save_figure(figure, path)


def weight_distribution_plot(arrays: dict[str, np.ndarray], path: Path) -> Path:
    """Histograms of the recorded weights of clean and of noisy training samples (density)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 3.5))
    weights = arrays["weights"]
    seen = np.isfinite(weights)
    noise = arrays.get("noise_mask")
    bins = np.linspace(float(np.nanmin(weights)), float(np.nanmax(weights)) + 1e-6, 40)
    if noise is None:
        axes.hist(weights[seen], bins=bins, density=True, alpha=0.6, label="all")
    else:
        axes.hist(weights[seen & ~noise], bins=bins, density=True, alpha=0.6, label="clean")
        axes.hist(weights[seen & noise], bins=bins, density=True, alpha=0.6, label="noisy")
    axes.set_xlabel("weight v (last epoch)")
    axes.set_ylabel("density")
    axes.set_title("weights of clean vs noisy training samples")
    axes.legend(loc="best")
    return save_figure(figure, path)


def reweight_plots(
    run_dir: str | Path, metrics: dict[str, Any], arrays: dict[str, np.ndarray]
) -> list[Path]:
    """Write ``weight_vs_loss.png`` and ``weight_distribution.png`` into ``run_dir``."""
    run_dir = Path(run_dir)
    if not np.isfinite(arrays["weights"]).any():
        return []
    return [
        weight_vs_loss_plot(metrics, arrays, run_dir / WEIGHT_VS_LOSS_NAME),
        weight_distribution_plot(arrays, run_dir / WEIGHT_DISTRIBUTION_NAME),
    ]
