"""Plots shared by every search: the search history. Files are written atomically as PNG."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from autorobust._io import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["save_figure", "search_history_plot"]


def save_figure(figure: Figure, path: str | Path) -> Path:
    """Write ``figure`` as a PNG to ``path`` atomically, then close it."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    return atomic_write(path, lambda handle: handle.write(buffer.getvalue()))


def search_history_plot(
    numbers: Sequence[int],
    values: Sequence[float],
    path: str | Path,
    *,
    maximize: bool = True,
    ylabel: str = "objective",
    title: str = "search history",
) -> Path:
    """Scatter of each finished trial's value against its number, with the running best as a line.

    Args:
        numbers: trial numbers (T,).
        values: objective values (T,), same order.
        path: the PNG to write.
        maximize: whether larger values are better (for the running best).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    order = sorted(range(len(numbers)), key=lambda i: numbers[i])
    xs = [numbers[i] for i in order]
    ys = [values[i] for i in order]
    best, running = [], None
    for y in ys:
        running = y if running is None else (max(running, y) if maximize else min(running, y))
        best.append(running)
    figure, axes = plt.subplots(figsize=(6, 3.5))
    axes.scatter(xs, ys, s=14, alpha=0.7, label="trial")
    axes.step(xs, best, where="post", color="C3", label="best so far")
    axes.set_xlabel("trial")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.legend(loc="best")
    return save_figure(figure, path)
