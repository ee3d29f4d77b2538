"""Per-class selection rules: which samples of each observed class keep their label.

A rule sees the scores of one observed class at a time (and, if it uses them, the clean meta
images' scores of that class) and returns which to keep and the class's threshold (the score a
candidate label of that class must reach to be relabelled into it). :func:`select_per_class`
applies a rule to every class and never empties one: a class of which the rule keeps fewer than
``min_keep`` samples keeps its ``min_keep`` top-scoring ones as well (all, if it has fewer).

Rules, registered in :data:`RULES` under the name ``selection.rule`` takes:

- ``meta_quantile``, :class:`MetaQuantileRule`: keep a sample labelled c when its score reaches the
  q-quantile of the clean meta images' scores of class c (default q = 0.1);
- ``gmm``, :class:`GaussianMixtureRule`: a two-component Gaussian mixture per class, keep the
  samples whose posterior of the high-mean component exceeds 0.5 (DivideMix, Li et al. 2020);
- ``otsu``, :class:`OtsuRule`: the two-way split of the class's scores that maximises the
  between-group variance (Otsu 1979), keep the upper group.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from autorobust._registry import Registry
from autorobust.errors import ConfigError, DataError
from autorobust.methods.sample_selection._options import build

__all__ = [
    "RULES",
    "ClassSelection",
    "GaussianMixtureRule",
    "MetaQuantileRule",
    "OtsuRule",
    "SelectionRule",
    "create_rule",
    "otsu_threshold",
    "select_per_class",
]


class SelectionRule(ABC):
    """Splits the scores of one observed class into kept and rejected samples.

    Class attributes: ``name`` (the registry name) and ``needs_meta_scores``. Options are
    keyword-only constructor arguments.
    """

    name: ClassVar[str]
    needs_meta_scores: ClassVar[bool] = False

    @abstractmethod
    def select_class(
        self, scores: np.ndarray, meta_scores: np.ndarray | None
    ) -> tuple[np.ndarray, float]:
        """(keep bool (n,), threshold) for the scores float64 (n,) of one class (n >= 1) and, for
        a rule that needs them, the clean meta images' scores of that class (m >= 1,)."""

    def options(self) -> dict[str, Any]:
        """The constructor's options and their values (for reports)."""
        return {}


RULES: Registry[type[SelectionRule]] = Registry("selection rule")


def create_rule(name: str, options: dict[str, Any] | None = None) -> SelectionRule:
    """Build the rule registered as ``name`` with keyword ``options``.

    Raises:
        UnknownNameError: ``name`` is not registered (the message lists the names).
        ConfigError: an unknown option or a refused value.
    """
    return build(RULES, name, dict(options or {}), "selection.rule")


@RULES.register("meta_quantile")
class MetaQuantileRule(SelectionRule):
    """Keep scores >= the q-quantile of the clean meta images' scores of the class (numpy's
    linear interpolation). Calibrated on images whose labels are right: a fraction of about q of
    the clean samples of the class is rejected, whatever the noise rate of the class, which is
    what a tail class made mostly of wrong labels needs.

    Options:
        q: the quantile in [0, 1); default 0.1.
    """

    name: ClassVar[str] = "meta_quantile"
    needs_meta_scores: ClassVar[bool] = True

    def __init__(self, *, q: float = 0.1) -> None:
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 <= q < 1.0:
            raise ValueError(f"q must be a number in [0, 1), got {q!r}")
        self.q = float(q)

    def options(self) -> dict[str, Any]:
        return {"q": self.q}

    def select_class(
        self, scores: np.ndarray, meta_scores: np.ndarray | None
    ) -> tuple[np.ndarray, float]:
        assert meta_scores is not None and meta_scores.size  # checked by select_per_class
        threshold = float(np.quantile(meta_scores, self.q))
        return scores >= threshold, threshold


def otsu_threshold(scores: np.ndarray) -> float:
    """Otsu's threshold of 1-D ``scores`` (n,): the smallest value of the upper group of the split
    between two consecutive distinct sorted values that maximises the between-group variance
    w0 w1 (mu0 - mu1)^2 (the first such split on ties). Fewer than two distinct values: their
    minimum (everything is kept)."""
    values = np.sort(np.asarray(scores, dtype=np.float64))
    n = values.size
    if n == 0:
        return float("inf")
    cuts = np.flatnonzero(np.diff(values) > 0) + 1  # sizes of the lower group at each cut
    if cuts.size == 0:
        return float(values[0])
    prefix = np.cumsum(values)
    lower_mean = prefix[cuts - 1] / cuts
    upper_mean = (prefix[-1] - prefix[cuts - 1]) / (n - cuts)
    between = (cuts / n) * (1 - cuts / n) * (lower_mean - upper_mean) ** 2
    return float(values[cuts[int(np.argmax(between))]])


@RULES.register("otsu")
class OtsuRule(SelectionRule):
    """Keep the upper group of the class's Otsu split (:func:`otsu_threshold`); the rule the
    issue's reference used on MW-Net's weights."""

    name: ClassVar[str] = "otsu"

    def select_class(
        self, scores: np.ndarray, meta_scores: np.ndarray | None
    ) -> tuple[np.ndarray, float]:
        threshold = otsu_threshold(scores)
        return scores >= threshold, threshold


@RULES.register("gmm")
class GaussianMixtureRule(SelectionRule):
    """DivideMix's split, per class: scale the class's scores to [0, 1], fit a two-component
    Gaussian mixture (scikit-learn, DivideMix's settings: ``max_iter`` 10, ``tol`` 1e-2,
    ``reg_covar`` 5e-4; seeded k-means initialisation) and keep the samples whose posterior of the
    component with the higher mean exceeds 0.5. The class's threshold is its lowest kept score
    (+inf when nothing is kept). A class with fewer than two distinct scores is kept whole.

    Options:
        max_iter: EM iterations, default 10; reg_covar: variance floor on the [0, 1] scale,
        default 5e-4; seed: of the k-means initialisation, default 0.
    """

    name: ClassVar[str] = "gmm"

    def __init__(self, *, max_iter: int = 10, reg_covar: float = 5e-4, seed: int = 0) -> None:
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
        if not isinstance(reg_covar, (int, float)) or not reg_covar > 0:
            raise ValueError(f"reg_covar must be a number > 0, got {reg_covar!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        self.max_iter, self.reg_covar, self.seed = max_iter, float(reg_covar), seed

    def options(self) -> dict[str, Any]:
        return {"max_iter": self.max_iter, "reg_covar": self.reg_covar, "seed": self.seed}

    def select_class(
        self, scores: np.ndarray, meta_scores: np.ndarray | None
    ) -> tuple[np.ndarray, float]:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.mixture import GaussianMixture

        low, high = float(scores.min()), float(scores.max())
        if np.unique(scores).size < 2:
            return np.ones(scores.shape, dtype=bool), low
        x = ((scores - low) / (high - low)).reshape(-1, 1)
        mixture = GaussianMixture(
            n_components=2,
            max_iter=self.max_iter,
            tol=1e-2,
            reg_covar=self.reg_covar,
            random_state=self.seed,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            mixture.fit(x)
        clean = int(np.argmax(mixture.means_.ravel()))
        keep = mixture.predict_proba(x)[:, clean] > 0.5
        threshold = float(scores[keep].min()) if keep.any() else float("inf")
        return keep, threshold


@dataclass(frozen=True)
class ClassSelection:
    """What :func:`select_per_class` decided.

    Attributes:
        keep: bool (N,), the samples that keep their observed label.
        thresholds: float64 (K,), the rule's threshold of each class (+inf for a class with no
            observed sample).
        topped_up: bool (K,), the classes of which the rule kept fewer than ``min_keep`` samples
            and which therefore also keep their ``min_keep`` top-scoring ones.
    """

    keep: np.ndarray
    thresholds: np.ndarray
    topped_up: np.ndarray


def select_per_class(
    rule: SelectionRule,
    scores: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    meta_scores: np.ndarray | None = None,
    meta_labels: np.ndarray | None = None,
    min_keep: int = 5,
) -> ClassSelection:
    """Apply ``rule`` to every observed class; no class present in ``labels`` is emptied.

    Args:
        rule: the selection rule.
        scores: float (N,), the clean scores of the observed labels (higher = more likely clean).
        labels: int64 (N,), the observed labels in [0, K).
        num_classes: K.
        meta_scores: float (M,), the meta images' scores for their own class (a rule with
            ``needs_meta_scores`` needs them); ``meta_labels`` int64 (M,) their classes.
        min_keep: >= 1; a class of n samples of which the rule keeps fewer than min(min_keep, n)
            also keeps its min(min_keep, n) top-scoring samples (ties broken by position).

    Raises:
        ConfigError: the rule needs meta scores and none were given, or ``min_keep`` < 1.
        DataError: a score is not finite, or a class has samples but no meta image.
    """
    if isinstance(min_keep, bool) or not isinstance(min_keep, (int, np.integer)) or min_keep < 1:
        raise ConfigError(f"selection.min_keep must be an integer >= 1, got {min_keep!r}")
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ in shape")
    bad = int((~np.isfinite(scores)).sum())
    if bad:
        raise DataError(f"selection: {bad} of the detector's scores are not finite")
    if rule.needs_meta_scores and (meta_scores is None or meta_labels is None):
        raise ConfigError(
            f"selection.rule: {rule.name!r} calibrates on the meta images' scores, which this "
            "detector does not give; use rule 'otsu' or 'gmm'"
        )
    keep = np.zeros(labels.shape, dtype=bool)
    thresholds = np.full(num_classes, np.inf)
    topped_up = np.zeros(num_classes, dtype=bool)
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        class_meta = None
        if rule.needs_meta_scores:
            class_meta = np.asarray(meta_scores, dtype=np.float64)[np.asarray(meta_labels) == c]
            if class_meta.size == 0:
                raise DataError(
                    f"selection: class {c} has no meta image to calibrate rule {rule.name!r}"
                )
        if members.size == 0:
            continue  # no observed label to judge; nothing is relabelled into it either
        class_keep, thresholds[c] = rule.select_class(scores[members], class_meta)
        keep[members[class_keep]] = True
        wanted = min(int(min_keep), members.size)
        if int(class_keep.sum()) < wanted:
            topped_up[c] = True
            order = np.argsort(-scores[members], kind="stable")
            keep[members[order[:wanted]]] = True
    return ClassSelection(keep=keep, thresholds=thresholds, topped_up=topped_up)
