"""The label-noise model: the transition matrix T̂ and the clean class counts n̂ (Hendrycks et al.).

Under label noise the observed label ỹ of an image of true class y is drawn from row y of the
transition matrix, T_ij = P(ỹ = j | y = i), so the observed class counts are not the class prior:
E[observed] = Tᵀ n for the clean counts n. This module estimates both from the clean meta set and a
*probe*, a classifier trained on the noisy pool, and measures the estimate against the truth of a
simulated shift.

Two estimators of T̂ (``estimate_noise_model(method=...)``):

- ``"glc"`` (Hendrycks et al., "Using Trusted Data to Train Deep Networks on Labels Corrupted by
  Severe Noise", NeurIPS 2018, Eq. 1): row i is the probe's noisy-label posterior p̃(ỹ | x)
  averaged over the meta images of true class i. Unbiased when the probe models p̃(ỹ | x) well;
  biased towards the probe's own errors when it does not, typically for rare classes that a probe
  trained on a noisy long tail underfits (their rows drift to the head classes).
- ``"confusion"``: the joint counts C_ij of the probe's *predicted clean class* i and the observed
  label j on the pool, then n̂_i = Σ_j C_ij and T̂_i = C_i / n̂_i. It uses every pool image rather
  than 10 meta images per class, and its errors are the probe's classification errors on the pool.
  With ``correct_confusion`` (the default) the probe's confusion M_ij = P(ŷ = j | y = i) measured
  on the meta set is undone: C ≈ Mᵀ diag(n) T is solved for diag(n) T ≥ 0 column by column
  (non-negative least squares), which is exact when ŷ and ỹ are independent given y
  (class-conditional noise, a probe that did not memorise the pool's labels) and M is known. M
  from 10 images per class is too noisy to invert as it is; it is shrunk towards the identity by
  ``pseudo_count`` correct predictions per class first.

The clean counts solve min ‖T̂ᵀ n − observed‖ over n ≥ 0 (:func:`estimate_clean_counts`), then are
floored (see there) and rescaled to the number of observed labels. For the confusion estimator
that solution is its own row sums (T̂ᵀ n̂ reproduces the observed counts exactly).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from scipy.optimize import nnls

from autorobust._io import write_json
from autorobust._validation import check_row_stochastic
from autorobust.errors import ConfigError, DataError

__all__ = [
    "DEFAULT_FLOOR",
    "DEFAULT_PSEUDO_COUNT",
    "DEFAULT_RESAMPLES",
    "NoiseModel",
    "NoiseModelCheck",
    "average_noise_models",
    "confusion_matrix",
    "estimate_clean_counts",
    "estimate_noise_model",
    "estimate_transition",
    "estimate_transition_confusion",
    "noise_model_errors",
    "shrink_noise_model",
    "true_transition",
]

DEFAULT_FLOOR = 0.01
"""Smallest clean count as a fraction of the uniform share N / K (see estimate_clean_counts)."""

DEFAULT_PSEUDO_COUNT = 10.0
"""Correct predictions added per class to the probe's meta-set confusion before it is undone."""

DEFAULT_RESAMPLES = 200
"""Bootstrap resamples of the meta set and the pool that :func:`estimate_noise_model`'s check
draws (``check=True``)."""

_USED_ABOVE = 0.9  # λ at or above: the estimate is used as it is (λ = 1)
_REJECTED_BELOW = 0.1  # λ below: the estimate is rejected (λ = 0, no noise)
_STATUSES = ("used", "shrunk", "rejected")
_FORMAT = "autorobust-noise-model"
_VERSION = 1
_METHODS = ("glc", "confusion")


def _class_name(c: int, class_names: Sequence[str] | None) -> str:
    return f"class {c}" if class_names is None else f"class {c} ({class_names[c]!r})"


def _check_labels(labels: np.ndarray, n: int, num_classes: int, what: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n,) or labels.dtype.kind not in "iu":
        raise ValueError(
            f"{what} must be integers of shape ({n},), got {labels.dtype} {labels.shape}"
        )
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{what} must lie in [0, {num_classes}), got {labels.min()}..{labels.max()}"
        )
    return labels.astype(np.int64)


def _check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    return int(num_classes)


def estimate_transition(
    probabilities: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    class_names: Sequence[str] | None = None,
) -> np.ndarray:
    """GLC's estimate of the transition matrix (Hendrycks et al. 2018, Eq. 1).

    T̂_i = mean of p̃(· | x) over the clean images x of true class i.

    Args:
        probabilities: float (M, K), the probe's noisy-label posterior p̃(ỹ | x) on the meta
            images (a softmax; for a probe trained with logit adjustment, the softmax of
            z + τ log π̃ with the observed prior π̃, which is what it fits to the noisy labels).
        labels: int (M,), the meta images' clean labels in [0, K).
        num_classes: K >= 2.
        class_names: optional K names for the error message.

    Returns:
        float64 (K, K), rows summing to 1.

    Raises:
        DataError: a class has no meta image (named), since its row cannot be estimated.
        ValueError: shapes, non-finite or negative probabilities.
    """
    k = _check_num_classes(num_classes)
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != k:
        raise ValueError(f"probabilities must be (M, {k}), got shape {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError("probabilities must be finite and >= 0")
    y = _check_labels(labels, len(p), k, "labels")
    per_class = np.bincount(y, minlength=k)
    if (per_class == 0).any():
        c = int(np.flatnonzero(per_class == 0)[0])
        raise DataError(
            f"noise model: {_class_name(c, class_names)} has no meta image; GLC estimates row "
            f"{c} of the transition matrix from the clean images of that class"
        )
    sums = np.zeros((k, k))
    np.add.at(sums, y, p)
    rows = sums / per_class[:, None]
    return rows / rows.sum(axis=1, keepdims=True)


def confusion_matrix(
    predicted: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    pseudo_count: float = 0.0,
    target: np.ndarray | None = None,
) -> np.ndarray:
    """Row-normalised confusion M_ij = P(ŷ = j | y = i), float64 (K, K), of predictions int (M,)
    against true labels int (M,).

    ``pseudo_count`` s >= 0 adds s correct predictions to every class: row i is
    (counts_i + s e_i) / (m_i + s), the meta-set confusion shrunk towards the identity by
    s / (m_i + s). With 10 meta images per class one image moves an entry by 0.1, and inverting
    such a noisy M amplifies it; the shrinkage trades that variance for a bias that fades as the
    meta set grows. A class without a labelled image gets the identity row.

    ``target``: optional float (K, K) row-stochastic matrix to shrink towards instead of the
    identity: row i is then (counts_i + s target_i) / (m_i + s) (a class without an image gets
    target_i). :func:`estimate_noise_model` with ``confusion_target="pool"`` passes the probe's
    prediction distribution per observed label on the pool (see there).
    """
    k = _check_num_classes(num_classes)
    y = _check_labels(labels, len(np.asarray(labels)), k, "labels")
    pred = _check_labels(predicted, len(y), k, "predicted")
    if not (np.isfinite(pseudo_count) and pseudo_count >= 0):
        raise ValueError(f"pseudo_count must be a number >= 0, got {pseudo_count!r}")
    base = np.eye(k)
    if target is not None:
        base = check_row_stochastic(target, name="target", num_classes=k)
    counts = np.zeros((k, k))
    np.add.at(counts, (y, pred), 1.0)
    counts += pseudo_count * base
    totals = counts.sum(axis=1, keepdims=True)
    return np.where(totals > 0, counts / np.where(totals > 0, totals, 1.0), base)


def estimate_transition_confusion(
    predicted: np.ndarray,
    observed_labels: np.ndarray,
    num_classes: int,
    *,
    meta_confusion: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The confusion estimate of (T̂, n̂) from the probe's predicted clean class on the pool.

    C_ij = #{pool images with ŷ = i and ỹ = j}. Without ``meta_confusion``: n̂_i = Σ_j C_ij,
    T̂_i = C_i / n̂_i. With it (M, the probe's confusion on the clean meta set): X = diag(n) T
    solves min ‖Mᵀ X_{:,j} − C_{:,j}‖ with X ≥ 0 for every observed label j, then n̂_i = Σ_j X_ij
    and T̂_i = X_i / n̂_i. A class with n̂_i = 0 gets the identity row (nothing is known about its
    noise; :func:`estimate_clean_counts`'s floor then gives it a small count).

    Args:
        predicted: int (N,), the probe's predicted clean class of every pool image.
        observed_labels: int (N,), the pool's observed labels.
        num_classes: K >= 2.
        meta_confusion: optional float (K, K) row-stochastic M (see :func:`confusion_matrix`).

    Returns:
        (T̂ float64 (K, K) with rows summing to 1, n̂ float64 (K,) >= 0 with Σ n̂ = N).
    """
    k = _check_num_classes(num_classes)
    obs = _check_labels(observed_labels, len(np.asarray(observed_labels)), k, "observed_labels")
    pred = _check_labels(predicted, len(obs), k, "predicted")
    joint = np.zeros((k, k))
    np.add.at(joint, (pred, obs), 1.0)
    if meta_confusion is not None:
        m = np.asarray(meta_confusion, dtype=np.float64)
        if m.shape != (k, k) or not np.isfinite(m).all():
            raise ValueError(f"meta_confusion must be a finite ({k}, {k}) matrix, got {m.shape}")
        joint = np.stack([nnls(m.T, joint[:, j])[0] for j in range(k)], axis=1)
        if joint.sum() > 0:
            joint *= len(obs) / joint.sum()
    counts = joint.sum(axis=1)
    transition = np.where(
        counts[:, None] > 0, joint / np.maximum(counts, 1e-300)[:, None], np.eye(k)
    )
    return transition / transition.sum(axis=1, keepdims=True), counts


def estimate_clean_counts(
    transition: np.ndarray, observed_counts: np.ndarray, *, floor: float = DEFAULT_FLOOR
) -> np.ndarray:
    """Clean class counts n̂ >= 0 from T̂ and the observed counts (docs/methods/glc.md).

    n̂ solves min ‖T̂ᵀ n − observed‖₂ over n >= 0 (non-negative least squares), is rescaled so
    that Σ n̂ = Σ observed = N, and every class is raised to at least ``floor`` · N / K (the other
    classes are scaled down to keep the sum; the floor holds exactly afterwards).

    Why a floor: non-negative least squares sets a class to exactly 0 whenever the other classes'
    noise explains its observed count, and a rare class under heavy noise is mostly noise (at 40%
    symmetric noise on a ρ = 100 tail, 35 of the rarest class's 693 labels are right), so a small
    error in T̂ zeroes it. A prior of 0 makes log π̂ = −inf, an infinite logit offset in logit
    adjustment. The floor bounds the damage of such an error: the default 0.01 is the share of a
    class 100 times rarer than uniform, below the rarest true class of the project's shifts
    (ρ = 100 over 10 classes: 0.04 of uniform), so it binds only on classes the estimate lost.

    Args:
        transition: float (K, K) row-stochastic T̂.
        observed_counts: (K,) observed labels per class, >= 0, not all 0.
        floor: smallest count as a fraction of N / K, in [0, 1]; 0 allows zeros.

    Returns:
        float64 (K,), >= floor · N / K, summing to N.
    """
    t = np.asarray(transition, dtype=np.float64)
    observed = np.asarray(observed_counts, dtype=np.float64)
    k = len(observed)
    if t.shape != (k, k) or observed.ndim != 1:
        raise ValueError(f"transition must be (K, K) for K = {k} counts, got {t.shape}")
    if not (np.isfinite(t).all() and np.isfinite(observed).all()) or (observed < 0).any():
        raise ValueError("transition and observed_counts must be finite, counts >= 0")
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"floor must be in [0, 1], got {floor}")
    total = observed.sum()
    if total <= 0:
        raise ValueError("observed_counts are all 0")
    counts, _ = nnls(t.T, observed)
    if counts.sum() <= 0:  # T̂ explains nothing (e.g. observed mass in its zero columns only)
        counts = observed.copy()
    counts = counts * (total / counts.sum())
    return _apply_floor(counts, floor * total / k)


def _apply_floor(counts: np.ndarray, minimum: float) -> np.ndarray:
    """``counts`` with every entry >= ``minimum`` and the same sum: floored entries are set to the
    minimum, the others scaled down to make room (repeated until no scaled entry dips below)."""
    total = counts.sum()
    fixed = np.zeros(len(counts), dtype=bool)
    out = counts.copy()
    for _ in range(len(counts)):
        low = ~fixed & (out < minimum)
        if not low.any():
            break
        fixed |= low
        out[fixed] = minimum
        free = ~fixed
        rest = counts[free].sum()
        if rest > 0:
            out[free] = counts[free] * ((total - minimum * fixed.sum()) / rest)
    return out


def true_transition(
    clean_labels: np.ndarray, observed_labels: np.ndarray, num_classes: int
) -> np.ndarray:
    """The realised transition matrix of a simulated shift, float64 (K, K).

    Row i holds the fractions of the pool's images of clean class i per observed label (not the
    nominal matrix the noise was drawn from). A class absent from the pool gets the identity row.
    """
    k = _check_num_classes(num_classes)
    clean = _check_labels(clean_labels, len(np.asarray(clean_labels)), k, "clean_labels")
    observed = _check_labels(observed_labels, len(clean), k, "observed_labels")
    joint = np.zeros((k, k))
    np.add.at(joint, (clean, observed), 1.0)
    totals = joint.sum(axis=1, keepdims=True)
    return np.where(totals > 0, joint / np.maximum(totals, 1.0), np.eye(k))


@dataclass(frozen=True)
class NoiseModelCheck:
    """The ground-truth-free check of an estimate and the shrinkage it chose
    (:func:`estimate_noise_model` with ``check=True``; the rule is in its docstring).

    Attributes:
        status: "used" (λ = 1, the estimate as it is), "shrunk" (0 < λ < 1) or "rejected"
            (λ = 0: T̂ = I and n̂ = the observed counts, floored).
        shrinkage: λ in [0, 1], the weight of the raw estimate in the model.
        reason: one sentence for a report, with the numbers behind the decision.
        departure: ‖n̂_raw − observed‖₂ / N, how far the raw estimate moves the prior (a fraction
            of the pool, L2 over classes).
        spread: the root mean square over resamples of ‖d_b − d̄‖₂ / N, with d_b the departure
            vector n̂_b − observed_b of resample b (same unit as ``departure``).
        resamples: B, the bootstrap resamples drawn.
        raw_clean_counts: K floats, n̂ of the raw estimate (before the shrinkage).
    """

    status: str
    shrinkage: float
    reason: str
    departure: float
    spread: float
    resamples: int
    raw_clean_counts: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.status not in _STATUSES:
            raise ConfigError(
                f"noise model check: status must be one of {', '.join(_STATUSES)}, "
                f"got {self.status!r}"
            )
        values = (self.shrinkage, self.departure, self.spread)
        if not all(isinstance(v, (int, float)) and np.isfinite(v) for v in values):
            raise ConfigError("noise model check: shrinkage, departure, spread must be numbers")
        if not 0.0 <= self.shrinkage <= 1.0:
            raise ConfigError(
                f"noise model check: shrinkage must be in [0, 1], got {self.shrinkage}"
            )
        if not isinstance(self.reason, str) or not self.reason:
            raise ConfigError("noise model check: reason must be a non-empty string")
        object.__setattr__(self, "shrinkage", float(self.shrinkage))
        object.__setattr__(self, "departure", float(self.departure))
        object.__setattr__(self, "spread", float(self.spread))
        object.__setattr__(self, "resamples", int(self.resamples))
        object.__setattr__(self, "raw_clean_counts", tuple(float(v) for v in self.raw_clean_counts))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (what ``NoiseModel.to_dict()["check"]`` holds)."""
        return {
            "status": self.status,
            "shrinkage": self.shrinkage,
            "reason": self.reason,
            "departure": self.departure,
            "spread": self.spread,
            "resamples": self.resamples,
            "raw_clean_counts": list(self.raw_clean_counts),
        }

    @classmethod
    def from_dict(cls, data: Any) -> NoiseModelCheck:
        """The check :meth:`to_dict` describes; ``ValueError`` (one line) naming the field."""
        if not isinstance(data, dict):
            raise ValueError("check must be a mapping")
        fields = ("status", "shrinkage", "reason", "departure", "spread", "resamples")
        missing = [key for key in (*fields, "raw_clean_counts") if key not in data]
        if missing:
            raise ValueError(f"check is missing {', '.join(missing)}")
        raw = data["raw_clean_counts"]
        if not isinstance(raw, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw
        ):
            raise ValueError("check.raw_clean_counts must be a list of numbers")
        for key in ("shrinkage", "departure", "spread"):
            if isinstance(data[key], bool) or not isinstance(data[key], (int, float)):
                raise ValueError(f"check.{key} must be a number, got {data[key]!r}")
        if isinstance(data["resamples"], bool) or not isinstance(data["resamples"], int):
            raise ValueError(f"check.resamples must be an integer, got {data['resamples']!r}")
        try:
            return cls(**{key: data[key] for key in fields}, raw_clean_counts=tuple(raw))
        except ConfigError as exc:
            raise ValueError(str(exc).removeprefix("noise model ")) from None


@dataclass(frozen=True)
class NoiseModel:
    """An estimated noise model: T̂, the clean counts n̂ and the observed counts it explains.

    Attributes:
        transition: float64 (K, K), T̂_ij = P(ỹ = j | y = i), rows summing to 1.
        clean_counts: float64 (K,) > 0, n̂ (summing to the number of observed labels).
        observed_counts: int64 (K,) >= 0, observed labels per class in the pool.
        method: how it was estimated ("glc", "confusion", "confusion_corrected" or "given").
        info: JSON-serialisable notes (the floor, the probe), written with the model.
        check: the ground-truth-free check and its shrinkage (:class:`NoiseModelCheck`), or None
            for an unchecked estimate; in the file under ``"check"`` (absent when None, and a
            file without it loads with None).

    Construction validates everything (``ConfigError``); :meth:`load` names the file instead.
    """

    transition: np.ndarray
    clean_counts: np.ndarray
    observed_counts: np.ndarray
    method: str = "given"
    info: dict[str, Any] = field(default_factory=dict)
    check: NoiseModelCheck | None = None

    FORMAT: ClassVar[str] = _FORMAT

    def __post_init__(self) -> None:
        try:
            t, n, obs = _validated(self.transition, self.clean_counts, self.observed_counts)
        except ValueError as exc:
            raise ConfigError(f"noise model: {exc}") from None
        if not isinstance(self.method, str) or not self.method:
            raise ConfigError(
                f"noise model: method must be a non-empty string, got {self.method!r}"
            )
        object.__setattr__(self, "transition", t)
        object.__setattr__(self, "clean_counts", n)
        object.__setattr__(self, "observed_counts", obs)
        object.__setattr__(self, "info", dict(self.info))
        if self.check is not None and not isinstance(self.check, NoiseModelCheck):
            raise ConfigError(f"noise model: check must be a NoiseModelCheck, got {self.check!r}")

    @property
    def num_classes(self) -> int:
        """K."""
        return len(self.clean_counts)

    @property
    def prior(self) -> np.ndarray:
        """π̂ = n̂ / Σ n̂, float64 (K,), all > 0."""
        return self.clean_counts / self.clean_counts.sum()

    @property
    def observed_prior(self) -> np.ndarray:
        """π̃ = observed / Σ observed, float64 (K,)."""
        return self.observed_counts / self.observed_counts.sum()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values: the format tag, T̂, n̂, the observed counts, π̂ (for reading only)
        and, for a checked estimate, ``check``."""
        data = {
            "format": _FORMAT,
            "version": _VERSION,
            "method": self.method,
            "num_classes": self.num_classes,
            "transition": self.transition.tolist(),
            "clean_counts": self.clean_counts.tolist(),
            "observed_counts": self.observed_counts.tolist(),
            "prior": self.prior.tolist(),
            "info": self.info,
        }
        if self.check is not None:
            data["check"] = self.check.to_dict()
        return data

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` to ``path`` atomically; returns the path."""
        return write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "noise model") -> NoiseModel:
        """The model :meth:`to_dict` describes; ``where`` prefixes every error (one line).

        Raises:
            DataError: not a noise model mapping, a missing or malformed field, a shape that does
                not match ``num_classes``, a row that does not sum to 1, a negative or non-finite
                value.
        """
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise DataError(f"{where}: not an autorobust noise model (expected format {_FORMAT!r})")
        if data.get("version") != _VERSION:
            raise DataError(
                f"{where}: unsupported version {data.get('version')!r}, expected {_VERSION}"
            )
        missing = [
            key for key in ("num_classes", "transition", "clean_counts", "observed_counts")
            if key not in data
        ]  # fmt: skip
        if missing:
            raise DataError(f"{where}: missing {', '.join(missing)}")
        k = data["num_classes"]
        if isinstance(k, bool) or not isinstance(k, int) or k < 2:
            raise DataError(f"{where}: num_classes must be an integer >= 2, got {k!r}")
        method, info = data.get("method", "given"), data.get("info", {})
        if not isinstance(method, str) or not method or not isinstance(info, dict):
            raise DataError(f"{where}: method must be a string and info a mapping")
        try:
            t, n, obs = _validated(
                data["transition"], data["clean_counts"], data["observed_counts"], num_classes=k
            )
        except ValueError as exc:
            raise DataError(f"{where}: {exc}") from None
        check = None
        if data.get("check") is not None:
            try:
                check = NoiseModelCheck.from_dict(data["check"])
            except ValueError as exc:
                raise DataError(f"{where}: {exc}") from None
        return cls(
            transition=t, clean_counts=n, observed_counts=obs, method=method, info=info,
            check=check,
        )  # fmt: skip

    @classmethod
    def load(cls, path: str | Path) -> NoiseModel:
        """Read a model written by :meth:`save`.

        Raises:
            DataError: one line naming ``path``: missing, not UTF-8 JSON, or invalid (see
                :meth:`from_dict`).
        """
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DataError(f"noise model {file}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"noise model {file}: cannot read ({exc.__class__.__name__})") from None
        try:
            data = json.loads(text, parse_constant=_refuse_constant)
        except (json.JSONDecodeError, ValueError) as exc:
            raise DataError(f"noise model {file}: not a JSON file ({exc})") from None
        return cls.from_dict(data, where=f"noise model {file}")


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number")


def _matrix(value: Any, name: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must hold numbers only") from None
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite")
    return array


def _validated(
    transition: Any, clean_counts: Any, observed_counts: Any, *, num_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T̂, n̂, observed) as float64, float64, int64 after checking them; ValueError otherwise."""
    t = _matrix(transition, "transition")
    n = _matrix(clean_counts, "clean_counts")
    obs = _matrix(observed_counts, "observed_counts")
    k = len(n) if num_classes is None else num_classes
    t = check_row_stochastic(t, name="transition", num_classes=k)
    if n.shape != (k,) or obs.shape != (k,):
        raise ValueError(
            f"clean_counts and observed_counts must have {k} entries, got {n.shape} and {obs.shape}"
        )
    if k < 2:
        raise ValueError(f"a noise model needs >= 2 classes, got {k}")
    if (n <= 0).any():
        raise ValueError(
            f"clean_counts must be > 0 (log π̂ is used), class {int(np.argmin(n))} has {n.min():g}"
        )
    if (obs < 0).any() or (obs != np.round(obs)).any() or obs.sum() == 0:
        raise ValueError(f"observed_counts must be integers >= 0, not all 0, got {obs.tolist()}")
    # Kept as given (rows within ROW_SUM_TOLERANCE of 1): renormalising would change the last
    # bits, and a saved model must load back bit for bit.
    return t, n, obs.astype(np.int64)


def estimate_noise_model(
    *,
    observed_labels: np.ndarray,
    num_classes: int,
    method: Literal["glc", "confusion"] = "confusion",
    meta_logits: np.ndarray | None = None,
    meta_labels: np.ndarray | None = None,
    pool_logits: np.ndarray | None = None,
    probe_tau: float = 0.0,
    correct_confusion: bool = True,
    pseudo_count: float = DEFAULT_PSEUDO_COUNT,
    confusion_target: Literal["identity", "pool"] = "identity",
    floor: float = DEFAULT_FLOOR,
    class_names: Sequence[str] | None = None,
    info: dict[str, Any] | None = None,
    check: bool = False,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> NoiseModel:
    """Estimate the noise model of a pool from a probe's logits (module docstring).

    The probe is a classifier trained on the noisy pool, with cross-entropy (``probe_tau`` 0) or
    logit adjustment at the *observed* counts with τ = ``probe_tau``. Its noisy-label posterior is
    softmax(z + τ log π̃) (what it fitted to the noisy labels), its predicted clean class argmax z.

    Args:
        observed_labels: int (N,), the pool's observed labels.
        num_classes: K.
        method: "confusion" (default; needs ``pool_logits``, and with ``correct_confusion`` also
            ``meta_logits`` and ``meta_labels``) or "glc" (needs ``meta_logits``,
            ``meta_labels``). docs/benchmarks.md, "Noise model", has the measured errors of both: on
            Fashion-MNIST ρ = 100 with 40% noise GLC's estimate was the worst of all, worse than
            the observed counts as a prior.
        meta_logits: float (M, K), the probe's logits on the clean meta images.
        meta_labels: int (M,), their clean labels.
        pool_logits: float (N, K), its logits on the pool images.
        probe_tau: τ >= 0 of the probe's logit adjustment (0: trained with cross-entropy).
        correct_confusion: undo the probe's meta-set confusion (confusion method only; default
            on, with the shrinkage below).
        pseudo_count: s of the meta-set confusion's shrinkage towards the identity
            (:func:`confusion_matrix`; with ``correct_confusion`` only). Default 10: half way
            with 10 meta images per class. Undone without shrinkage (0), the confusion of 10
            images per class made every error larger than no correction at all.
        confusion_target: what the meta-set confusion M is shrunk towards by ``pseudo_count``:
            "identity" (the default, as before) or "pool", the probe's prediction distribution
            among the pool images of each observed label, q_j = C_{:,j} / observed_j. Why "pool":
            shrinking M towards the identity says "the probe never confuses these classes", so
            the confusion of overlapping classes (Shirt / T-shirt) that the shrinkage removes is
            explained as label noise. Without noise q_j is the probe's confusion of class j
            itself (measured on hundreds of pool images instead of 10 meta images), so the
            shrinkage adds no bias; with noise q_j mixes the rows of the classes whose labels
            flipped to j, and M = q makes C = Mᵀ diag(observed) hold exactly: full shrinkage
            towards "pool" is the estimate "no noise" (T̂ = I, n̂ = observed). Its bias is
            towards no noise, the observed counts, never towards inventing noise.
        floor: smallest clean count as a fraction of N / K (:func:`estimate_clean_counts`).
        class_names: optional names for error messages.
        info: extra notes stored with the model.
        check: check the estimate without ground truth and shrink it towards "no noise"
            (below); off by default, which returns the raw estimate with ``check`` None.
        resamples: B >= 20 bootstrap resamples of the check.
        seed: seed of the check's resampling (the check is deterministic given it).

    The check (``check=True``). The raw estimate n̂ departs from the observed counts by
    d = n̂ − observed. Its sampling error is measured by re-estimating on B bootstrap resamples:
    the meta set resampled with replacement within each class (stratified: every class keeps its
    size) and the pool resampled with replacement, giving d_b = n̂_b − observed_b. With the
    signal S = ‖d‖² and the noise V = mean_b ‖d_b − d̄‖², the shrinkage factor is the positive
    part of the James–Stein factor (James & Stein 1961; Efron & Morris 1973),
    λ = max(0, 1 − V / S), and the model is the mixture of the raw joint counts with "no noise":
    diag(n(λ)) T(λ) = λ diag(n̂) T̂ + (1 − λ) diag(observed), so n(λ) = λ n̂ + (1 − λ) observed
    and T(λ) moves towards the identity. λ < 0.1 is rounded to 0 (status "rejected": the evidence
    of noise is not larger than the estimate's own sampling error), λ >= 0.9 to 1 ("used"),
    anything between is "shrunk".

    Why the meta set's resampling matters most, and the bias it catches: what the confusion
    estimator undoes, the probe's confusion M on the meta set, is measured on ~10 images per
    class; for overlapping classes (Shirt / T-shirt) M's off-diagonal is large and its estimate
    from 10 images swings by 0.1 per image, and the pseudo-count shrinkage of M towards the
    identity reads the part of the overlap it removes as label noise. A resample that draws
    the overlapping images more or less often moves n̂ of those classes by hundreds, so V is
    large exactly where the estimate confuses overlap with noise, and λ falls. The pool's
    resampling adds its (small) sampling error. What the bootstrap cannot see is a bias common
    to every resample (a probe that memorised the noisy labels agrees with them on the pool and
    hides the noise); that errs towards "no noise", the observed counts, which is the safe side
    for a prior. Measured in benchmarks/noise_model.py (docs/benchmarks.md, "Noise model").

    Returns:
        The :class:`NoiseModel`; ``method`` is "glc", "confusion" or "confusion_corrected", and
        ``info`` holds ``floor``, ``probe_tau`` and ``floored_classes`` (those the floor raised).
        With ``check``, ``transition`` and ``clean_counts`` are the shrunk ones, ``check`` the
        :class:`NoiseModelCheck` (with the raw n̂).
    """
    arguments: dict[str, Any] = {
        "observed_labels": observed_labels, "num_classes": num_classes, "method": method,
        "meta_logits": meta_logits, "meta_labels": meta_labels, "pool_logits": pool_logits,
        "probe_tau": probe_tau, "correct_confusion": correct_confusion,
        "pseudo_count": pseudo_count, "confusion_target": confusion_target, "floor": floor,
        "class_names": class_names, "info": info,
    }  # fmt: skip
    raw = _estimate(**arguments)
    if not check:
        return raw
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 20:
        raise ValueError(f"resamples must be an integer >= 20, got {resamples!r}")
    return _checked(raw, arguments, resamples=resamples, seed=seed)


def _checked(
    raw: NoiseModel, arguments: dict[str, Any], *, resamples: int, seed: int
) -> NoiseModel:
    """``raw`` shrunk by the bootstrap check of :func:`estimate_noise_model`."""
    rng = np.random.default_rng(seed)
    k = raw.num_classes
    obs_labels = np.asarray(arguments["observed_labels"])
    pool_logits, meta_logits = arguments["pool_logits"], arguments["meta_logits"]
    meta_labels = arguments["meta_labels"]
    uses_meta = arguments["method"] == "glc" or bool(arguments["correct_confusion"])
    by_class = []
    if uses_meta:
        meta_y = np.asarray(meta_labels)
        by_class = [np.flatnonzero(meta_y == c) for c in range(k)]
    departures = np.empty((resamples, k))
    for b in range(resamples):
        pool_index = rng.integers(0, len(obs_labels), len(obs_labels))
        resampled = dict(arguments, observed_labels=obs_labels[pool_index])
        if pool_logits is not None:
            resampled["pool_logits"] = np.asarray(pool_logits)[pool_index]
        if uses_meta:
            meta_index = np.concatenate(
                [rng.choice(index, len(index)) for index in by_class if len(index)]
            )
            resampled["meta_logits"] = np.asarray(meta_logits)[meta_index]
            resampled["meta_labels"] = np.asarray(meta_labels)[meta_index]
        model = _estimate(**resampled)
        departures[b] = model.clean_counts - model.observed_counts
    total = float(raw.observed_counts.sum())
    departure = raw.clean_counts - raw.observed_counts
    signal = float(departure @ departure)
    variance = float(((departures - departures.mean(axis=0)) ** 2).sum(axis=1).mean())
    factor = max(0.0, 1.0 - variance / signal) if signal > 0 else 0.0
    moved, spread = np.sqrt(signal) / total, np.sqrt(variance) / total
    if factor < _REJECTED_BELOW:
        status, factor = "rejected", 0.0
        reason = (
            f"rejected: the estimate moves the prior by {moved:.3f} (L2), not clearly more than "
            f"its bootstrap spread {spread:.3f} over {resamples} resamples of the meta set and "
            f"pool, so the observed counts are used (no noise)"
        )
    elif factor >= _USED_ABOVE:
        status, factor = "used", 1.0
        reason = (
            f"used: the estimate moves the prior by {moved:.3f} (L2), {moved / spread:.1f} times "
            f"its bootstrap spread {spread:.3f} over {resamples} resamples of the meta set and pool"
        )
    else:
        status = "shrunk"
        reason = (
            f"shrunk by λ = {factor:.2f} towards no noise: the estimate moves the prior by "
            f"{moved:.3f} (L2), only {moved / spread:.1f} times its bootstrap spread {spread:.3f} "
            f"over {resamples} resamples of the meta set and pool"
        )
    verdict = NoiseModelCheck(
        status=status, shrinkage=factor, reason=reason, departure=moved, spread=spread,
        resamples=resamples, raw_clean_counts=tuple(raw.clean_counts),
    )  # fmt: skip
    return shrink_noise_model(raw, factor, check=verdict, floor=float(arguments["floor"]))


def shrink_noise_model(
    model: NoiseModel,
    factor: float,
    *,
    check: NoiseModelCheck | None = None,
    floor: float = DEFAULT_FLOOR,
) -> NoiseModel:
    """``model`` moved towards "no noise" by the weight ``factor`` = λ in [0, 1] of the estimate.

    The joint counts mix: diag(n(λ)) T(λ) = λ diag(n̂) T̂ + (1 − λ) diag(observed), so
    n(λ) = λ n̂ + (1 − λ) observed (float (K,), summing to N; then floored as in
    :func:`estimate_clean_counts`) and row i of T(λ) is the mixed row i over n(λ)_i (the identity
    row for a class without mass). λ = 1 returns ``model``'s T̂ and n̂, λ = 0 T = I and the
    observed counts. ``check`` is stored in the result (``model.check`` when None).
    """
    if not (np.isfinite(factor) and 0.0 <= factor <= 1.0):
        raise ValueError(f"factor must be in [0, 1], got {factor!r}")
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"floor must be in [0, 1], got {floor}")
    k = model.num_classes
    observed = model.observed_counts.astype(np.float64)
    joint = factor * model.clean_counts[:, None] * model.transition + (1 - factor) * np.diag(
        observed
    )
    counts, transition = _from_joint(joint)
    counts = counts * (observed.sum() / counts.sum())
    counts = _apply_floor(counts, floor * observed.sum() / k)
    return NoiseModel(
        transition=transition,
        clean_counts=counts,
        observed_counts=model.observed_counts,
        method=model.method,
        info=model.info,
        check=model.check if check is None else check,
    )


def _from_joint(joint: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, T) of joint counts float (K, K), diag(n) T = joint: n its row sums, T its rows over
    them (the identity row for a class without mass), rows summing to 1."""
    counts = joint.sum(axis=1)
    transition = np.where(
        counts[:, None] > 0, joint / np.maximum(counts, 1e-300)[:, None], np.eye(len(counts))
    )
    return counts, transition / transition.sum(axis=1, keepdims=True)


def average_noise_models(
    models: Sequence[NoiseModel], *, info: dict[str, Any] | None = None
) -> NoiseModel:
    """The equal-weight average of estimates of the same pool's noise model.

    The joint counts average: diag(n) T = mean_i diag(n̂_i) T̂_i, so n = mean_i n̂_i (float (K,),
    summing to N) and row c of T is the averaged row c over n_c (the identity row for a class
    without mass). The total variation of the averaged prior from any prior π is at most the mean
    of the estimates' (it is convex), so two estimates that are each closer to the truth than the
    observed counts give an average that is too, and one that is not is diluted.

    Args:
        models: at least one :class:`NoiseModel`, all with the same observed counts.
        info: notes stored with the result.

    Returns:
        A :class:`NoiseModel` with ``method`` "average" and no ``check`` (each estimate keeps
        its own).

    Raises:
        ValueError: no model, or models of pools with other observed counts.
    """
    if not models:
        raise ValueError("average_noise_models needs at least one model")
    observed = models[0].observed_counts
    for model in models[1:]:
        if model.num_classes != models[0].num_classes or not np.array_equal(
            model.observed_counts, observed
        ):
            raise ValueError("average_noise_models: the models explain different observed counts")
    counts, transition = _from_joint(
        np.mean([m.clean_counts[:, None] * m.transition for m in models], axis=0)
    )
    return NoiseModel(
        transition=transition,
        clean_counts=counts,
        observed_counts=observed,
        method="average",
        info=dict(info or {}),
    )


def _estimate(
    *,
    observed_labels: np.ndarray,
    num_classes: int,
    method: str,
    meta_logits: np.ndarray | None,
    meta_labels: np.ndarray | None,
    pool_logits: np.ndarray | None,
    probe_tau: float,
    correct_confusion: bool,
    pseudo_count: float,
    confusion_target: str,
    floor: float,
    class_names: Sequence[str] | None,
    info: dict[str, Any] | None,
) -> NoiseModel:
    """The raw estimate of :func:`estimate_noise_model` (its arguments, no check)."""
    k = _check_num_classes(num_classes)
    obs_labels = _check_labels(observed_labels, len(np.asarray(observed_labels)), k, "labels")
    observed = np.bincount(obs_labels, minlength=k)
    if not (np.isfinite(probe_tau) and probe_tau >= 0):
        raise ValueError(f"probe_tau must be a number >= 0, got {probe_tau!r}")
    name: str = method  # "confusion_corrected" below when the meta confusion is undone
    if method == "glc":
        if meta_logits is None or meta_labels is None:
            raise ValueError("method 'glc' needs meta_logits and meta_labels")
        z = _logits(meta_logits, k, "meta_logits")
        with np.errstate(divide="ignore"):
            shift = probe_tau * np.log(observed / observed.sum()) if probe_tau else 0.0
        transition = estimate_transition(
            _softmax(z + shift), meta_labels, k, class_names=class_names
        )
        solved = nnls(transition.T, observed.astype(np.float64))[0]
    elif method == "confusion":
        if pool_logits is None:
            raise ValueError("method 'confusion' needs pool_logits")
        predicted = _logits(pool_logits, k, "pool_logits").argmax(1)
        m = None
        if correct_confusion:
            if meta_logits is None or meta_labels is None:
                raise ValueError("correct_confusion needs meta_logits and meta_labels")
            if confusion_target not in ("identity", "pool"):
                raise ValueError(
                    f"confusion_target must be 'identity' or 'pool', got {confusion_target!r}"
                )
            target = None
            if confusion_target == "pool":
                joint = np.zeros((k, k))
                np.add.at(joint, (obs_labels, predicted), 1.0)
                rows = joint.sum(axis=1, keepdims=True)
                target = np.where(rows > 0, joint / np.maximum(rows, 1.0), np.eye(k))
            meta_predicted = _logits(meta_logits, k, "meta_logits").argmax(1)
            m = confusion_matrix(
                meta_predicted, meta_labels, k, pseudo_count=pseudo_count, target=target
            )
            name = "confusion_corrected"
        transition, solved = estimate_transition_confusion(
            predicted, obs_labels, k, meta_confusion=m
        )
    else:
        raise ValueError(f"method must be one of {', '.join(_METHODS)}, got {method!r}")
    counts = estimate_clean_counts(transition, observed, floor=floor)
    raw = solved * (observed.sum() / max(solved.sum(), 1e-300))
    floored = np.flatnonzero(raw < floor * observed.sum() / k - 1e-9).tolist()
    notes: dict[str, Any] = {"floor": floor, "probe_tau": float(probe_tau)}
    if correct_confusion:
        notes["pseudo_count"] = float(pseudo_count)
        if confusion_target != "identity":
            notes["confusion_target"] = confusion_target
    notes["floored_classes"] = floored
    return NoiseModel(
        transition=transition,
        clean_counts=counts,
        observed_counts=observed,
        method=name,
        info={**notes, **(info or {})},
    )


def _logits(value: np.ndarray, num_classes: int, what: str) -> np.ndarray:
    z = np.asarray(value, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] != num_classes or not np.isfinite(z).all():
        raise ValueError(f"{what} must be finite logits (n, {num_classes}), got shape {z.shape}")
    return z


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def noise_model_errors(
    model: NoiseModel, true_transition: np.ndarray, true_counts: np.ndarray
) -> dict[str, Any]:
    """How far an estimate is from the truth of a simulated shift (for ``metrics.json``).

    Args:
        model: the estimate.
        true_transition: float (K, K), e.g. :func:`true_transition` of the pool.
        true_counts: (K,) clean images per class in the pool.

    Returns:
        ``transition_row_l1`` (K,) ‖T̂_i − T_i‖₁ and its ``_max`` / ``_mean``;
        ``transition_diagonal_error`` (K,) T̂_ii − T_ii and its ``_min``: an underestimated
        diagonal is what hurts forward correction most (a class whose T̂_ii is small can explain
        its labels without ever being predicted, and is never learnt);
        ``prior_total_variation`` ½ Σ |π̂ − π| between n̂ / Σ n̂ and the true prior;
        ``observed_prior_total_variation``, the same for the observed counts (what a loss that
        uses the observed counts is off by: the estimate helps when it is smaller);
        ``prior_log_ratio`` (K,) log π̂_c − log π_c and its largest magnitude
        ``prior_log_ratio_max`` (the error of logit adjustment's offset τ log π̂ per unit τ:
        total variation hardly sees a rare class off by a factor of 4, the offset does);
        ``clean_counts`` n̂ and ``true_counts`` as lists. Plain JSON values; a class absent from
        the pool has no finite log ratio and is left out of ``prior_log_ratio_max`` (None there).
    """
    k = model.num_classes
    t = np.asarray(true_transition, dtype=np.float64)
    counts = np.asarray(true_counts, dtype=np.float64)
    if t.shape != (k, k) or counts.shape != (k,) or counts.sum() <= 0:
        raise ValueError(
            f"true_transition must be ({k}, {k}) and true_counts ({k},) with a positive sum, got "
            f"{t.shape} and {counts.shape}"
        )
    row_l1 = np.abs(model.transition - t).sum(axis=1)
    diagonal = np.diag(model.transition) - np.diag(t)
    prior = counts / counts.sum()
    present = prior > 0
    log_ratio = np.log(model.prior[present]) - np.log(prior[present])
    per_class: list[float | None] = [None] * k
    for c, value in zip(np.flatnonzero(present), log_ratio, strict=True):
        per_class[int(c)] = float(value)
    return {
        "method": model.method,
        "transition_row_l1": [float(v) for v in row_l1],
        "transition_row_l1_max": float(row_l1.max()),
        "transition_row_l1_mean": float(row_l1.mean()),
        "transition_diagonal_error": [float(v) for v in diagonal],
        "transition_diagonal_error_min": float(diagonal.min()),
        "prior_total_variation": float(0.5 * np.abs(model.prior - prior).sum()),
        "observed_prior_total_variation": float(0.5 * np.abs(model.observed_prior - prior).sum()),
        "prior_log_ratio": per_class,
        "prior_log_ratio_max": float(np.abs(log_ratio).max()) if log_ratio.size else None,
        "clean_counts": [float(v) for v in model.clean_counts],
        "true_counts": [float(v) for v in counts],
    }
