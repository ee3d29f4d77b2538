"""CSNAS's cell encoding (paper 000, §III-A1): one operation per edge of the full cell DAG.

A cell has two input nodes (ids 0 and 1: the outputs c_{k-2} and c_{k-1} of the two previous cells),
N intermediate nodes (ids 2 .. N+1) and the output c_k, the concatenation of the intermediate nodes.
Every pair i < j with j an intermediate node is an edge carrying one operation of
:data:`~autorobust.methods.csnas.darts.operations.OPERATION_NAMES`, and node
j = sum_i o_(i,j)(x_i). A cell is therefore a vector of ``sum_{i=2}^{N+1} i = N (N + 3) / 2``
operation names (14 for N = 4, 20 for N = 5), ordered by target node, then source node: (0,2),
(1,2), (0,3), (1,3), (2,3), (0,4), ...
A genotype holds one such vector for the normal and one for the reduction cell.

**Zero nodes.** The ``none`` operation lets a node receive nothing. A node is *zero* when each of
its incoming edges is ``none`` or leaves a zero node; it is identically zero, so it is left out of
the output concatenation (which then has fewer channels) and the edges leaving it are not built
(like ``none`` edges). An input node with no live outgoing edge is not read, so the cell does not
build its pre-processing. A cell in which every intermediate node is zero has no path from its
inputs to its output and is rejected as invalid (:class:`GenotypeError`); a search prunes such a
trial. With this rule every parameter of a built cell lies on a path to the output, and the
function computed is exactly that of the full DAG (the zero nodes contribute zero channels).

Genotypes are stored as JSON (``{"nodes": N, "normal": [...], "reduce": [...]}``), never
evaluated as Python, and validated on load.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autorobust._io import write_json
from autorobust.errors import ConfigError
from autorobust.methods.csnas.darts.operations import OPERATION_NAMES

__all__ = [
    "DARTS_V2",
    "CellStructure",
    "Genotype",
    "GenotypeError",
    "analyze_cell",
    "cell_edges",
    "check_genotype_files",
    "edge_count",
    "random_genotype",
]

FORMAT = "autorobust-darts-genotype"


class GenotypeError(ConfigError):
    """A genotype is malformed: unknown operation, wrong length, or no path to the output."""


def edge_count(nodes: int) -> int:
    """Length of one cell's vector: sum_{i=2}^{N+1} i = N (N + 3) / 2 for N = ``nodes``."""
    return nodes * (nodes + 3) // 2


def cell_edges(nodes: int) -> list[tuple[int, int]]:
    """The edges (i, j) of a cell with N = ``nodes`` intermediate nodes, in encoding order."""
    return [(i, j) for j in range(2, nodes + 2) for i in range(j)]


def _nodes_for_length(length: int) -> int | None:
    for nodes in range(1, 64):
        if edge_count(nodes) == length:
            return nodes
        if edge_count(nodes) > length:
            break
    return None


@dataclass(frozen=True)
class CellStructure:
    """What of a cell's full DAG is live (see the module docstring for the zero-node rule).

    Attributes:
        nodes: N, intermediate nodes (ids 2 .. N+1).
        ops: the cell vector, length N (N + 3) / 2, in :func:`cell_edges` order.
        live_nodes: ids of the non-zero intermediate nodes, ascending; their concatenation is the
            cell's output.
        live_edges: ``(i, j, op)`` of every edge that is built: op is not ``none`` and node i is an
            input or a live node.
        used_inputs: which input nodes (0: c_{k-2}, 1: c_{k-1}) some live edge reads.
    """

    nodes: int
    ops: tuple[str, ...]
    live_nodes: tuple[int, ...]
    live_edges: tuple[tuple[int, int, str], ...]
    used_inputs: frozenset[int]

    @property
    def valid(self) -> bool:
        """Whether some path leads from an input to the output (at least one live node)."""
        return bool(self.live_nodes)


def analyze_cell(ops: Sequence[str], nodes: int) -> CellStructure:
    """Find the live nodes and edges of a cell vector (no validation of names or length)."""
    ops = tuple(ops)
    live = {0, 1}
    live_edges = []
    for index, (i, j) in enumerate(cell_edges(nodes)):
        if ops[index] != "none" and i in live:
            live_edges.append((i, j, ops[index]))
            live.add(j)  # edges are ordered by target, so j's sources are all decided by now
    used = frozenset(i for i, _, _ in live_edges if i < 2)
    return CellStructure(
        nodes=nodes,
        ops=ops,
        live_nodes=tuple(sorted(live - {0, 1})),
        live_edges=tuple(live_edges),
        used_inputs=used,
    )


def _check_cell(ops: object, nodes: int, name: str, where: str) -> tuple[str, ...]:
    if not isinstance(ops, (list, tuple)) or not all(isinstance(op, str) for op in ops):
        raise GenotypeError(f"{where}: {name} must be a list of operation names, got {ops!r}")
    expected = edge_count(nodes)
    if len(ops) != expected:
        raise GenotypeError(
            f"{where}: {name} must have {expected} operations for nodes={nodes} "
            f"(sum_(i=2)^(N+1) i), got {len(ops)}"
        )
    for index, op in enumerate(ops):
        if op not in OPERATION_NAMES:
            i, j = cell_edges(nodes)[index]
            raise GenotypeError(
                f"{where}: {name}[{index}] (edge {i}->{j}) is the unknown operation {op!r}; "
                f"valid: {', '.join(OPERATION_NAMES)}"
            )
    if not analyze_cell(ops, nodes).valid:
        raise GenotypeError(
            f"{where}: {name} cell has no path from its inputs to its output "
            "(every intermediate node is zero)"
        )
    return tuple(ops)


@dataclass(frozen=True)
class Genotype:
    """A searched architecture: the normal and the reduction cell vectors (validated).

    Args:
        normal: N (N + 3) / 2 operation names of the normal cell, in :func:`cell_edges` order.
        reduce: the same for the reduction cell.
        nodes: N, intermediate nodes per cell (>= 1).

    Raises:
        GenotypeError: unknown operation, wrong length, or a cell with every node zero.
    """

    normal: tuple[str, ...]
    reduce: tuple[str, ...]
    nodes: int = 4

    def __post_init__(self) -> None:
        self._validate("genotype")

    def _validate(self, where: str) -> None:
        if isinstance(self.nodes, bool) or not isinstance(self.nodes, int) or self.nodes < 1:
            raise GenotypeError(f"{where}: nodes must be an integer >= 1, got {self.nodes!r}")
        object.__setattr__(self, "normal", _check_cell(self.normal, self.nodes, "normal", where))
        object.__setattr__(self, "reduce", _check_cell(self.reduce, self.nodes, "reduce", where))

    @property
    def normal_structure(self) -> CellStructure:
        """Live nodes and edges of the normal cell."""
        return analyze_cell(self.normal, self.nodes)

    @property
    def reduce_structure(self) -> CellStructure:
        """Live nodes and edges of the reduction cell."""
        return analyze_cell(self.reduce, self.nodes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable ``{"format", "nodes", "normal", "reduce"}``."""
        return {
            "format": FORMAT,
            "nodes": self.nodes,
            "normal": list(self.normal),
            "reduce": list(self.reduce),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "genotype") -> Genotype:
        """Validate a dict as written by :meth:`to_dict` (``nodes`` may be left out).

        Raises:
            GenotypeError: a missing or unknown key, or an invalid cell (see the class).
        """
        if not isinstance(data, Mapping):
            raise GenotypeError(f"{where}: expected a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - {"format", "nodes", "normal", "reduce"})
        if unknown:
            raise GenotypeError(
                f"{where}: unknown key {unknown[0]!r}; expected nodes, normal, reduce"
            )
        if data.get("format", FORMAT) != FORMAT:
            raise GenotypeError(f"{where}: format must be {FORMAT!r}, got {data['format']!r}")
        for key in ("normal", "reduce"):
            if key not in data:
                raise GenotypeError(f"{where}: missing key {key!r}")
            cell = data[key]
            if not isinstance(cell, (list, tuple)) or not all(isinstance(op, str) for op in cell):
                raise GenotypeError(
                    f"{where}: {key} must be a list of operation names, got {cell!r}"
                )
        normal = data["normal"]
        nodes = data.get("nodes")
        if nodes is None:
            nodes = _nodes_for_length(len(normal))
            if nodes is None:
                raise GenotypeError(
                    f"{where}: normal has {len(normal)} operations, not N (N + 3) / 2 for any N"
                )
        genotype = object.__new__(cls)
        object.__setattr__(genotype, "normal", normal)
        object.__setattr__(genotype, "reduce", data["reduce"])
        object.__setattr__(genotype, "nodes", nodes)
        genotype._validate(where)
        return genotype

    @classmethod
    def load(cls, path: str | Path) -> Genotype:
        """Read and validate a genotype JSON file (never evaluated as code)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise GenotypeError(f"{path}: no such genotype file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise GenotypeError(f"{path}: not a JSON file ({exc})") from None
        return cls.from_dict(data, where=str(path))

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON to ``path`` atomically."""
        return write_json(path, self.to_dict())

    @classmethod
    def coerce(cls, value: Genotype | Mapping[str, Any] | str | Path) -> Genotype:
        """A genotype from itself, a dict (:meth:`from_dict`) or a JSON file path (:meth:`load`)."""
        if isinstance(value, Genotype):
            return value
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        if isinstance(value, (str, Path)):
            return cls.load(value)
        raise GenotypeError(
            f"genotype: expected a JSON file path or a mapping, got {type(value).__name__}"
        )


def check_genotype_files(
    entries: Sequence[str], *, field: str = "design.architectures", keep: str = "fixed"
) -> dict[str, Genotype]:
    """Read and validate every genotype file among ``entries`` (``keep``, the config's own model,
    is no file and is skipped), before anything is trained or written.

    Returns:
        The genotypes by entry.

    Raises:
        GenotypeError: one line, ``<field>: <file>: <what is wrong>``: missing, not JSON, an
            unknown operation, a wrong length or a cell without a path to its output.
    """
    genotypes = {}
    for entry in entries:
        if entry == keep:
            continue
        try:
            genotypes[entry] = Genotype.load(entry)
        except GenotypeError as exc:
            raise GenotypeError(f"{field}: {exc}") from None
    return genotypes


def random_genotype(nodes: int, rng: np.random.Generator, *, max_tries: int = 1000) -> Genotype:
    """A genotype drawn uniformly from the valid ones (rejection sampling of uniform vectors).

    Args:
        nodes: N.
        rng: source of the draws.
        max_tries: redraws before giving up (a uniform vector is invalid only when both input
            edges of every node are ``none``, with probability 64^-N per cell).
    """
    length = edge_count(nodes)
    for _ in range(max_tries):
        normal, reduce = (
            tuple(OPERATION_NAMES[k] for k in rng.integers(len(OPERATION_NAMES), size=length))
            for _ in range(2)
        )
        if analyze_cell(normal, nodes).valid and analyze_cell(reduce, nodes).valid:
            return Genotype(normal=normal, reduce=reduce, nodes=nodes)
    raise RuntimeError(f"no valid genotype in {max_tries} draws")  # pragma: no cover


DARTS_V2 = Genotype(
    normal=(
        *("sep_conv_3x3", "sep_conv_3x3"),
        *("sep_conv_3x3", "sep_conv_3x3", "none"),
        *("skip_connect", "sep_conv_3x3", "none", "none"),
        *("skip_connect", "none", "dil_conv_3x3", "none", "none"),
    ),
    reduce=(
        *("max_pool_3x3", "max_pool_3x3"),
        *("none", "max_pool_3x3", "skip_connect"),
        *("max_pool_3x3", "none", "skip_connect", "none"),
        *("none", "max_pool_3x3", "skip_connect", "none", "none"),
    ),
    nodes=4,
)
"""The cell DARTS found (Liu et al. 2019, "DARTS_V2"), written in this full-DAG encoding: each node
keeps its two chosen edges and every other edge is ``none``. The default of model ``"darts"``."""
