"""Training dynamics: each sample's margin and loss at every epoch, and their file.

Pleiss et al. (2020), "Identifying mislabeled data using the area under the margin ranking"
(AUM), rank a sample's label by its margin averaged over training: the logit of the assigned label
minus the largest other logit, taken from the training forward pass. A mislabelled sample's margin
stays low or negative while its class's clean samples pull the model the other way; a single
snapshot of a probe sees only the end of that struggle.

:class:`DynamicsRecorder` accumulates the margins and per-sample losses of one run into float32
(N, E) arrays (the :class:`~autorobust.train.trainer.Trainer` fills them with
``train.record_dynamics``); :func:`write_dynamics` writes them atomically to ``dynamics.npz`` and
:func:`read_dynamics` reads such a file back without ever unpickling.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from autorobust._io import atomic_write, read_npz
from autorobust.errors import AutorobustError, DataError

__all__ = [
    "DYNAMICS_NAME",
    "DynamicsRecorder",
    "TrainingDynamics",
    "label_margins",
    "read_dynamics",
    "write_dynamics",
]

DYNAMICS_NAME = "dynamics.npz"


def label_margins(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """AUM's margin (Pleiss et al. 2020) of each row: z_y - max_{c != y} z_c, in logit units.

    Args:
        logits: float (B, K), K >= 2.
        labels: int64 (B,), the assigned (observed) labels.

    Returns:
        float (B,), of the logits' dtype; positive where the assigned label wins.
    """
    own = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return own - others.max(dim=1).values


@dataclass(frozen=True)
class TrainingDynamics:
    """A run's recorded dynamics over N training samples and E epochs.

    Attributes:
        margins: float32 (N, E), sample i's margin at epoch e (logit units; NaN: not recorded).
        losses: float32 (N, E), its per-sample training loss (NaN: not recorded).
        labels: int64 (N,), the labels the margins and losses were taken of (the observed ones).
    """

    margins: np.ndarray
    losses: np.ndarray
    labels: np.ndarray


class DynamicsRecorder:
    """Fills float32 (N, E) margins and losses, one column per epoch, on ``device``.

    Args:
        labels: int64 (N,), the training split's labels (kept for the file).
        epochs: E.
        device: where the arrays live (the training device, so recording needs no copy).
    """

    def __init__(self, labels: torch.Tensor, epochs: int, device: torch.device) -> None:
        n = len(labels)
        self.labels = labels.detach().to("cpu", torch.int64)
        self.margins = torch.full((n, epochs), float("nan"), dtype=torch.float32, device=device)
        self.losses = torch.full((n, epochs), float("nan"), dtype=torch.float32, device=device)
        self.epoch = 0

    @torch.no_grad()
    def record(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        losses: torch.Tensor,
        index: torch.Tensor,
    ) -> None:
        """Store the margins of ``logits`` (B, K) for ``labels`` (B,) and the per-sample
        ``losses`` (B,) at rows ``index`` (B,) int64 of column :attr:`epoch`."""
        self.margins[index, self.epoch] = label_margins(logits.detach(), labels).float()
        self.losses[index, self.epoch] = losses.detach().float()

    def state(self) -> dict[str, torch.Tensor]:
        """The arrays, for the checkpoint (tensors only: a weights-only load reads them)."""
        return {"margins": self.margins, "losses": self.losses}

    def load_state(self, state: dict[str, torch.Tensor], path: Path | None = None) -> None:
        """Restore :meth:`state`'s arrays.

        Raises:
            AutorobustError: their shapes differ from this run's (N, E); one line naming ``path``.
        """
        for name in ("margins", "losses"):
            value = state.get(name)
            current = getattr(self, name)
            if not isinstance(value, torch.Tensor) or value.shape != current.shape:
                got = getattr(value, "shape", None)
                raise AutorobustError(
                    f"{path}: checkpoint's recorded {name} have shape {got}, expected "
                    f"{tuple(current.shape)}"
                )
            current.copy_(value.to(current.device, torch.float32))

    def result(self) -> TrainingDynamics:
        """The arrays on the CPU as numpy (float32 (N, E), int64 (N,))."""
        return TrainingDynamics(
            margins=self.margins.cpu().numpy().copy(),
            losses=self.losses.cpu().numpy().copy(),
            labels=self.labels.numpy().copy(),
        )


def write_dynamics(path: str | Path, dynamics: TrainingDynamics) -> Path:
    """Write ``dynamics`` atomically to ``path`` (an ``.npz`` of ``margins`` (N, E) float32,
    ``losses`` (N, E) float32 and ``labels`` (N,) int64); returns the path.

    Raises:
        WriteError: the file cannot be written (one line naming it).
    """
    arrays: dict[str, np.ndarray] = {
        "margins": np.asarray(dynamics.margins, dtype=np.float32),
        "losses": np.asarray(dynamics.losses, dtype=np.float32),
        "labels": np.asarray(dynamics.labels, dtype=np.int64),
    }
    return atomic_write(path, lambda handle: np.savez(handle, allow_pickle=False, **arrays))


def read_dynamics(path: str | Path, labels: np.ndarray) -> TrainingDynamics:
    """Read ``dynamics.npz`` for a pool whose observed labels are ``labels`` int64 (N,).

    The file has no positions of its samples, so it is matched to the pool by its length and its
    ``labels`` array, which must equal ``labels``.

    Returns:
        :class:`TrainingDynamics` with float32 (N, E) margins and losses, E >= 1.

    Raises:
        DataError: one line naming ``path``: missing, not an ``.npz`` archive of numeric arrays
            (never unpickled), an array missing, shapes that differ from the pool's (N,) or from
            each other, labels that differ from the pool's (a file of another run), or a value
            that is not finite (a sample not recorded).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: dynamics file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None

    def select(names: list[str]) -> list[str]:
        for name in ("margins", "losses", "labels"):
            if name not in names:
                raise DataError(f"{path}: no {name!r} array (not a dynamics.npz)")
        return ["margins", "losses", "labels"]

    arrays = read_npz(path, data, select=select)
    labels = np.asarray(labels)
    n = len(labels)
    margins, losses, file_labels = arrays["margins"], arrays["losses"], arrays["labels"]
    for name, value in (("margins", margins), ("losses", losses)):
        if value.dtype.kind != "f" or value.ndim != 2 or value.shape[0] != n or not value.shape[1]:
            raise DataError(
                f"{path}: {name} must be float ({n}, epochs) for this pool, got {value.dtype} "
                f"{value.shape} (written for another run?)"
            )
    if losses.shape != margins.shape:
        raise DataError(f"{path}: losses {losses.shape} and margins {margins.shape} differ")
    if file_labels.shape != labels.shape or not np.array_equal(file_labels, labels):
        raise DataError(f"{path}: its labels differ from this pool's (written for another run)")
    for name, value in (("margins", margins), ("losses", losses)):
        bad = int((~np.isfinite(value)).sum())
        if bad:
            raise DataError(f"{path}: {bad} {name} are not finite (samples not recorded)")
    return TrainingDynamics(
        margins=margins.astype(np.float32),
        losses=losses.astype(np.float32),
        labels=file_labels.astype(np.int64),
    )
