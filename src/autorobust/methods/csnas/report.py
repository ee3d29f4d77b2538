"""Pictures of the architecture search: a genotype's two cells, and the search history."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from autorobust.methods.csnas.darts.genotype import CellStructure, Genotype
from autorobust.report.plots import save_figure, search_history_plot

__all__ = ["draw_genotype", "fitness_history_plot"]

_COLOURS = {
    "skip_connect": "#7f7f7f",
    "max_pool_3x3": "#1f77b4",
    "avg_pool_3x3": "#17becf",
    "sep_conv_3x3": "#d62728",
    "sep_conv_5x5": "#ff7f0e",
    "dil_conv_3x3": "#2ca02c",
    "dil_conv_5x5": "#9467bd",
}
_SHORT = {
    "skip_connect": "skip",
    "max_pool_3x3": "max3",
    "avg_pool_3x3": "avg3",
    "sep_conv_3x3": "sep3",
    "sep_conv_5x5": "sep5",
    "dil_conv_3x3": "dil3",
    "dil_conv_5x5": "dil5",
}


def _node_positions(nodes: int) -> dict[int | str, tuple[float, float]]:
    positions: dict[int | str, tuple[float, float]] = {0: (0.0, 1.4), 1: (0.0, -1.4)}
    for j in range(2, nodes + 2):
        positions[j] = (1.6 * (j - 1), 0.0)
    positions["out"] = (1.6 * (nodes + 1) + 1.0, 0.0)
    return positions


def _draw_cell(axes, structure: CellStructure, title: str) -> None:
    pos = _node_positions(structure.nodes)
    live = set(structure.live_nodes)
    for i, j, op in structure.live_edges:
        (x1, y1), (x2, y2) = pos[i], pos[j]
        # Edges between nodes on the middle row would overlap: bend them, farther ones more.
        rad = 0.0 if i < 2 else (0.35 + 0.1 * (j - i - 1)) * (1 if (i + j) % 2 else -1)
        colour = _COLOURS.get(op, "black")
        axes.annotate(
            "",
            xy=(x2, y2),
            xytext=(x1, y1),
            arrowprops={
                "arrowstyle": "-|>",
                "color": colour,
                "lw": 1.4,
                "shrinkA": 11,
                "shrinkB": 11,
                "connectionstyle": f"arc3,rad={rad}",
            },
        )
        # Matplotlib's arc3 control point is the midpoint + rad * (dy, -dx); the label sits on the
        # curve at t = 0.7, near the target, where edges into different nodes do not collide.
        cx = (x1 + x2) / 2 + rad * (y2 - y1)
        cy = (y1 + y2) / 2 - rad * (x2 - x1)
        t = 0.7
        mx = (1 - t) ** 2 * x1 + 2 * t * (1 - t) * cx + t**2 * x2
        my = (1 - t) ** 2 * y1 + 2 * t * (1 - t) * cy + t**2 * y2
        box = {"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.85}
        axes.text(
            mx, my, _SHORT.get(op, op), fontsize=7, color=colour, ha="center", va="center", bbox=box
        )
    for j in structure.live_nodes:
        (x1, y1), (x2, y2) = pos[j], pos["out"]
        axes.annotate(
            "",
            xy=(x2, y2),
            xytext=(x1, y1),
            arrowprops={"arrowstyle": "-|>", "color": "#bbbbbb", "lw": 0.8, "shrinkA": 11,
                        "shrinkB": 14, "connectionstyle": "arc3,rad=-0.25"},
        )  # fmt: skip
    labels: dict[int | str, str] = {0: "c_{k-2}", 1: "c_{k-1}", "out": "c_{k}"}
    for key, (x, y) in pos.items():
        dead = isinstance(key, int) and key >= 2 and key not in live
        text = labels.get(key, str(key - 2) if isinstance(key, int) else "")
        face = "#f2f2f2" if dead else ("#cfe2f3" if key in (0, 1, "out") else "#fff2cc")
        axes.text(
            x, y, text if not dead else f"{text}\n(zero)", ha="center", va="center", fontsize=8,
            bbox={"boxstyle": "circle,pad=0.35", "fc": face,
                  "ec": "#999999" if dead else "black", "ls": "--" if dead else "-"},
        )  # fmt: skip
    axes.set_title(title, fontsize=10)
    axes.set_aspect("equal")
    xs = [p[0] for p in pos.values()]
    axes.set_xlim(min(xs) - 0.8, max(xs) + 0.8)
    axes.set_ylim(-2.6, 2.6)
    axes.axis("off")


def draw_genotype(genotype: Genotype, path: str | Path, *, title: str | None = None) -> Path:
    """Draw the normal and reduction cells of ``genotype`` as a PNG (matplotlib only).

    Inputs c_{k-2}, c_{k-1} on the left, intermediate nodes 0..N-1 in a row, the output c_k (the
    concatenation of the live nodes) on the right; each built edge is an arrow labelled with its
    operation (abbreviated; a legend spells them out). ``none`` edges and edges leaving zero
    nodes are not drawn; zero nodes are dashed.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    width = 2.0 + 1.6 * (genotype.nodes + 2)
    figure, axes = plt.subplots(2, 1, figsize=(width, 7.0))
    _draw_cell(axes[0], genotype.normal_structure, "normal cell")
    _draw_cell(axes[1], genotype.reduce_structure, "reduction cell")
    legend = "   ".join(f"{_SHORT[op]} = {op}" for op in _SHORT)
    figure.text(0.5, 0.02, legend, ha="center", fontsize=7)
    if title:
        figure.suptitle(title, fontsize=11)
    return save_figure(figure, path)


def fitness_history_plot(
    numbers: Sequence[int], values: Sequence[float], path: str | Path, *, fitness: str
) -> Path:
    """The search history of a CSNAS study (lower fitness is better), via search_history_plot."""
    return search_history_plot(
        numbers,
        values,
        path,
        maximize=False,
        ylabel=f"{fitness} fitness (lower is better)",
        title=f"architecture search ({fitness})",
    )
