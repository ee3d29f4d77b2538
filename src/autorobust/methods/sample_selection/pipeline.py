"""Detector -> per-class rule -> relabelling, and the relabel file it ends in.

:func:`select_labels` decides, :func:`selection_summary` measures (with the clean labels of a
simulated shift: precision and recall of the kept labels, relabel accuracy), and
:func:`run_selection` does both and writes the relabel file that ``data.relabel_file`` names for
the final model (:mod:`autorobust.data.relabel`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autorobust.data.relabel import DROPPED, write_relabel_file
from autorobust.errors import ConfigError
from autorobust.methods.sample_selection.config import SelectionConfig
from autorobust.methods.sample_selection.detectors import create_detector, prototype_labels
from autorobust.methods.sample_selection.probe import ProbeOutputs
from autorobust.methods.sample_selection.relabelling import confident_predictions, relabel_mask
from autorobust.methods.sample_selection.rules import create_rule, select_per_class

__all__ = ["Selection", "run_selection", "select_labels", "selection_summary", "write_selection"]


@dataclass(frozen=True)
class Selection:
    """The cleaned label set of a pool of N samples with K classes.

    Attributes:
        num_classes: K.
        observed: int64 (N,), the observed labels it was made from.
        labels: int64 (N,), the label each sample trains with, or -1 (dropped).
        weights: float64 (N,), each sample's weight (1 for a kept sample, the confidence of a
            soft-relabelled one, ``rejected_weight`` of a rejected one kept; 0 where dropped).
        scores: float64 (N,), the detector's clean scores of the observed labels.
        kept: bool (N,), kept with their observed label by the rule (or the ``min_keep`` top-up).
        relabelled: bool (N,), given the probe's predicted class.
        retained: bool (N,), rejected but kept with their observed label at ``rejected_weight``.
        thresholds: float64 (K,), the rule's threshold of every class.
        topped_up: bool (K,), classes the ``min_keep`` guarantee filled up.
        detector, rule: the names; ``options``: the detector's and rule's options.
    """

    num_classes: int
    observed: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
    scores: np.ndarray
    kept: np.ndarray
    relabelled: np.ndarray
    retained: np.ndarray
    thresholds: np.ndarray
    topped_up: np.ndarray
    detector: str
    rule: str
    options: dict[str, Any]

    @property
    def dropped(self) -> np.ndarray:
        """bool (N,), samples whose label is dropped."""
        return self.labels == DROPPED

    @property
    def weighted(self) -> bool:
        """Whether a sample that trains has a weight other than 1 (the file then has weights)."""
        return bool(np.any(self.weights[~self.dropped] != 1.0))

    @property
    def class_counts(self) -> np.ndarray:
        """int64 (K,), samples per label trained on (the counts a prior-based loss will use)."""
        return np.bincount(self.labels[~self.dropped], minlength=self.num_classes).astype(np.int64)


def select_labels(probe: ProbeOutputs, config: SelectionConfig | None = None) -> Selection:
    """Run the detector, the per-class rule and the relabelling of ``config`` on ``probe``.

    A sample the rule keeps keeps its label with weight 1. A rejected sample takes the predicted
    class (raw-logit argmax of the probe's ``prediction_logits``, default its ``logits``) when
    :func:`~autorobust.methods.sample_selection.relabelling.relabel_mask` allows it, with its
    confidence as weight (``relabel_weight: confidence``) or 1; otherwise its label is dropped,
    or kept with ``rejected_weight`` (``rejected: keep``). No class present among the observed
    labels is emptied (``min_keep``).

    Raises:
        ConfigError: an unknown detector or rule, an unknown option, or a combination the probe's
            outputs cannot serve (e.g. the rule needs meta scores the detector does not give,
            relabelling without logits).
        DataError: non-finite scores, a class with no meta image.
    """
    config = config or SelectionConfig()
    detector = create_detector(config.detector, config.detector_options)
    rule = create_rule(config.rule, config.rule_options)
    detector.check(probe)
    k, observed = probe.num_classes, probe.labels
    scores = np.asarray(detector.observed_scores(probe), dtype=np.float64)
    meta_scores = detector.meta_scores(probe) if rule.needs_meta_scores else None
    chosen = select_per_class(
        rule,
        scores,
        observed,
        k,
        meta_scores=meta_scores,
        meta_labels=probe.meta_labels,
        min_keep=config.min_keep,
    )
    kept = chosen.keep
    labels = np.where(kept, observed, DROPPED).astype(np.int64)
    weights = kept.astype(np.float64)
    relabelled = np.zeros_like(kept)
    if config.relabel:
        logits = probe.logits if probe.prediction_logits is None else probe.prediction_logits
        if logits is None:
            raise ConfigError(
                "selection.relabel: relabelling takes the probe's predicted class, but its "
                "logits were not given; set relabel: false"
            )
        predicted, confidence = confident_predictions(logits)
        guesses = None
        if config.relabel_needs_prototype:
            if probe.features is None or probe.meta_features is None:
                raise ConfigError(
                    "selection.relabel_needs_prototype: needs the probe's features and "
                    "meta_features, which were not given"
                )
            guesses = prototype_labels(probe)
        relabelled = relabel_mask(
            rejected=~kept,
            labels=observed,
            predicted=predicted,
            confidence=confidence,
            min_confidence=config.relabel_confidence,
            candidate_scores=detector.candidate_scores(probe, predicted),
            thresholds=chosen.thresholds,
            prototype_labels=guesses,
        )
        labels[relabelled] = predicted[relabelled]
        weights[relabelled] = (
            confidence[relabelled] if config.relabel_weight == "confidence" else 1.0
        )
    retained = np.zeros_like(kept)
    if config.rejected == "keep":
        retained = ~kept & ~relabelled
        labels[retained] = observed[retained]
        weights[retained] = config.rejected_weight
    return Selection(
        num_classes=k,
        observed=observed,
        labels=labels,
        weights=weights,
        scores=scores,
        kept=kept,
        relabelled=relabelled,
        retained=retained,
        thresholds=chosen.thresholds,
        topped_up=chosen.topped_up,
        detector=detector.name,
        rule=rule.name,
        options={"detector": detector.options(), "rule": rule.options()},
    )


def _fraction(numerator: int, denominator: int) -> float | None:
    return None if denominator == 0 else numerator / denominator


def selection_summary(
    selection: Selection, clean_labels: np.ndarray | None = None
) -> dict[str, Any]:
    """Counts per class and overall, plus quality measures when the clean labels are known.

    Per class c (by observed label unless said otherwise): ``observed``, ``kept``,
    ``relabelled_from`` (rejected c given another class), ``relabelled_to`` (rejected samples
    given class c), ``retained`` (rejected, kept at low weight), ``dropped``, ``trained`` (final
    labels c), ``threshold`` (None when infinite) and ``topped_up``.

    With ``clean_labels`` int64 (N,) (a simulated shift): per class ``precision`` (fraction of the
    kept samples of c whose label c is right) and ``recall`` (fraction of the rightly labelled
    samples of c that are kept); overall ``precision``, ``recall``, ``relabel_accuracy``
    (fraction of the relabelled samples whose new label is right), ``noise_rate_before`` and
    ``noise_rate_after`` (wrong labels among the samples that train, before and after). A ratio
    with nothing to count is None.

    Returns:
        A JSON-serialisable dict (for ``metrics.json`` and the design report).
    """
    s, k = selection, selection.num_classes
    observed, labels = s.observed, s.labels
    trained = ~s.dropped
    per_class: list[dict[str, Any]] = []
    for c in range(k):
        mine = observed == c
        row: dict[str, Any] = {
            "class": c,
            "observed": int(mine.sum()),
            "kept": int((mine & s.kept).sum()),
            "relabelled_from": int((mine & s.relabelled).sum()),
            "relabelled_to": int((s.relabelled & (labels == c)).sum()),
            "retained": int((mine & s.retained).sum()),
            "dropped": int((mine & s.dropped).sum()),
            "trained": int((trained & (labels == c)).sum()),
            "threshold": float(s.thresholds[c]) if np.isfinite(s.thresholds[c]) else None,
            "topped_up": bool(s.topped_up[c]),
        }
        if clean_labels is not None:
            right = mine & (clean_labels == c)
            row["precision"] = _fraction(int((right & s.kept).sum()), int((mine & s.kept).sum()))
            row["recall"] = _fraction(int((right & s.kept).sum()), int(right.sum()))
        per_class.append(row)
    summary: dict[str, Any] = {
        "detector": s.detector,
        "rule": s.rule,
        "options": s.options,
        "pool_size": len(observed),
        "kept": int(s.kept.sum()),
        "relabelled": int(s.relabelled.sum()),
        "retained": int(s.retained.sum()),
        "dropped": int(s.dropped.sum()),
        "weighted": s.weighted,
        "trained_class_counts": s.class_counts.tolist(),
        "per_class": per_class,
    }
    if clean_labels is not None:
        clean_labels = np.asarray(clean_labels)
        if clean_labels.shape != observed.shape:
            raise ValueError(f"clean_labels must have shape {observed.shape}")
        right = observed == clean_labels
        summary["precision"] = _fraction(int((right & s.kept).sum()), int(s.kept.sum()))
        summary["recall"] = _fraction(int((right & s.kept).sum()), int(right.sum()))
        summary["relabel_accuracy"] = _fraction(
            int((s.relabelled & (labels == clean_labels)).sum()), int(s.relabelled.sum())
        )
        summary["noise_rate_before"] = _fraction(int((~right).sum()), len(observed))
        summary["noise_rate_after"] = _fraction(
            int((trained & (labels != clean_labels)).sum()), int(trained.sum())
        )
    return summary


def write_selection(selection: Selection, path: str | Path, source_index: np.ndarray) -> Path:
    """Write ``selection`` as the relabel file ``path`` (atomically), for ``data.relabel_file``.

    ``source_index`` int64 (N,) is the pool's (``splits.train.source_index``). The file holds
    ``weights`` only when a training sample's weight differs from 1, so that a hard selection
    trains with the plain mean loss.
    """
    return write_relabel_file(
        path,
        labels=selection.labels,
        source_index=np.asarray(source_index),
        weights=selection.weights if selection.weighted else None,
    )


def run_selection(
    probe: ProbeOutputs,
    config: SelectionConfig | None = None,
    *,
    source_index: np.ndarray,
    path: str | Path,
    clean_labels: np.ndarray | None = None,
) -> dict[str, Any]:
    """:func:`select_labels`, :func:`write_selection` to ``path``, :func:`selection_summary`.

    Args:
        probe: the probe's outputs on the pool (in pool order) and the meta set.
        config: the selection settings; None: the defaults.
        source_index: int64 (N,), the pool's ``source_index``.
        path: the relabel file to write.
        clean_labels: int64 (N,), the pool's clean labels when known (a simulated shift).

    Returns:
        The summary, with ``file`` (the path written).
    """
    if len(np.asarray(source_index)) != len(probe.labels):
        raise ValueError(
            f"source_index has {len(source_index)} entries, the probe's pool {len(probe.labels)}"
        )
    selection = select_labels(probe, config)
    written = write_selection(selection, path, source_index)
    return {**selection_summary(selection, clean_labels), "file": str(written)}
