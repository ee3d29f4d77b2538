"""AutoBalance's figure: the learned loss parameters against class frequency."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from autorobust.report.plots import save_figure

__all__ = ["learned_parameters_plot"]


def learned_parameters_plot(
    class_counts: Sequence[int] | np.ndarray,
    options: dict[str, Any],
    path: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    tau: float = 1.0,
) -> Path:
    """Plot the learned per-class offsets ι, scales Δ and weights ω against the class prior π_c.

    The offsets are drawn centred (a common shift of ι does not change the loss) next to logit
    adjustment's τ·log π, also centred: tail classes should receive more negative offsets (larger
    margins) than head classes. Writes a PNG atomically and returns its path.

    Args:
        class_counts: int (K,) training images per class.
        options: ``{"scale": (K,), "offset": (K,), "weight": (K,)}`` per-class values.
        path: the PNG to write.
        class_names: K labels for the points.
        tau: τ of the reference logit-adjustment line.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(class_counts, dtype=np.float64)
    prior = counts / counts.sum()
    offset = np.asarray(options["offset"], dtype=np.float64)
    la = tau * np.log(prior)
    figure, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    axes[0].semilogx(prior, offset - offset.mean(), "o", label="learned ι (centred)")
    order = np.argsort(prior)
    axes[0].semilogx(prior[order], (la - la.mean())[order], "--", label=f"τ log π, τ={tau:g}")
    axes[0].set_ylabel("logit offset ι")
    axes[0].legend(fontsize=8)
    axes[1].semilogx(prior, options["scale"], "o")
    axes[1].set_ylabel("logit scale Δ")
    axes[2].semilogx(prior, options["weight"], "o")
    axes[2].set_ylabel("loss weight ω")
    for axis in axes:
        axis.set_xlabel("class frequency π_c")
        axis.grid(alpha=0.3)
        if class_names is not None:
            for x, name, y in zip(prior, class_names, axis.lines[0].get_ydata(), strict=True):
                axis.annotate(
                    str(name), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points"
                )
    figure.suptitle("AutoBalance: learned loss parameters vs class frequency")
    return save_figure(figure, path)
