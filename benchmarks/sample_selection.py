"""How well each detector and rule of ``methods/sample_selection`` cleans a long-tailed, noisy pool.

The protocol of issue 13: Fashion-MNIST, long tail rho = 100, 40% symmetric noise, a meta set of
10 clean images per class. A logit-adjusted probe (``small_cnn``) is trained on the noisy pool for
``--epochs`` epochs; every (detector, rule) combination then selects and relabels, and is scored
against the pool's clean labels: samples kept, precision and recall of the kept labels (overall
and of the rarest class), relabelled samples and their accuracy, and the per-class ROC-AUC of the
detector's score (clean vs noisy label, within each observed class). With ``--final-epochs N``,
logit adjustment is trained for N epochs on the cleaned pool of the first combination (and of a
perfect filter, for reference) and its balanced and worst-class test accuracy reported.

The probe records its training dynamics (``train.record_dynamics``), so the detectors of issue 19
run too: ``aum`` (Pleiss et al. 2020), ``mean_loss`` and ``agreement``. For every combination the
precision and recall of the kept labels of every class are reported, with the five rarest classes
and the worst class (lowest precision, at its recall); and for every detector, the precision of
each class's top-scoring samples at 70% recall of its clean labels (threshold-free: what a perfect
rule could reach), against the issue's target of no class below 80% precision at 70% recall.
Beside the detectors, one oracle score tells the probe's limit from the rule's: the probability
that a sample's label is right under the *true* noise model, from the probe's balanced posterior
p(j|x), the true clean prior pi and transition T: T_yy pi_y p(y|x) / sum_j T_jy pi_j p(j|x), the
Bayes-optimal ranking of a class's samples if the probe's posterior were calibrated.

With ``--final-epochs``, a third cleaned pool is trained too: the first combination's kept
samples with their wrong labels removed (its recall at perfect precision), which splits the gap
between that selection and the perfect filter into what its wrong labels cost and what its
missed clean samples cost.

    python benchmarks/sample_selection.py --epochs 5 --final-epochs 15

Writes ``results/sample_selection.json`` and ``.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import add_update_docs_flag, update_docs

from autorobust.config import load_config
from autorobust.data.relabel import read_relabel_file, write_relabel_file
from autorobust.experiment import build_splits, train_run
from autorobust.methods.sample_selection import (
    SelectionConfig,
    create_detector,
    run_probe_outputs,
    run_selection,
)
from autorobust.train.metrics import roc_auc

RESULTS = Path(__file__).resolve().parent / "results"
MARKERS = ("<!-- sample-selection:start -->", "<!-- sample-selection:end -->")
COMBOS = [
    ("posterior", {}, "meta_quantile", {}),
    ("posterior", {}, "otsu", {}),
    ("posterior", {}, "gmm", {}),
    ("small_loss", {}, "meta_quantile", {}),
    ("small_loss", {}, "gmm", {}),
    ("prototype", {}, "meta_quantile", {}),
    ("prototype", {"margin": True}, "meta_quantile", {}),
    ("aum", {}, "gmm", {}),
    ("aum", {}, "otsu", {}),
    ("aum", {"first_epoch": 1}, "gmm", {}),
    ("mean_loss", {}, "gmm", {}),
    ("agreement", {}, "gmm", {}),
    ("agreement", {"scale": "minmax"}, "gmm", {}),
]
TARGET_PRECISION, TARGET_RECALL = 0.8, 0.7


def _name(detector: str, options: dict) -> str:
    extra = [k if v is True else f"{k}={v}" for k, v in options.items()]
    return detector + "".join(f"+{e}" for e in extra)


def _precision_at_recall(
    scores: np.ndarray, labels: np.ndarray, clean: np.ndarray, k: int, recall: float
) -> list:
    """Per class: precision of its top-scoring samples that hold ``recall`` of its clean labels."""
    out = []
    for c in range(k):
        mine = np.flatnonzero(labels == c)
        right = clean[mine] == c
        if not right.any():
            out.append(None)
            continue
        order = np.argsort(-scores[mine], kind="stable")
        found = np.cumsum(right[order])
        top = int(np.searchsorted(found, np.ceil(recall * right.sum()))) + 1
        out.append(round(float(found[top - 1]) / top, 4))
    return out


def _oracle_clean_scores(
    logits: np.ndarray, labels: np.ndarray, clean: np.ndarray, k: int
) -> np.ndarray:
    """log P(label right | x, observed label) float64 (N,) under the pool's true noise model:
    the balanced posterior softmax(``logits``) (N, K) weighted by the true clean prior, and the
    true transition T (rows: clean class, columns: observed), both counted from ``clean`` and
    ``labels`` (N,)."""
    z = logits - logits.max(axis=1, keepdims=True)
    posterior = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    prior = np.bincount(clean, minlength=k) / len(clean)
    transition = np.zeros((k, k))
    np.add.at(transition, (clean, labels), 1.0)
    transition /= np.maximum(transition.sum(axis=1, keepdims=True), 1.0)
    joint = posterior * prior  # ∝ p(clean class j | x)
    rows = np.arange(len(labels))
    right = joint[rows, labels] * transition[labels, labels]
    observed = (joint * transition[:, labels].T).sum(axis=1)
    tiny = np.finfo(np.float64).tiny
    return np.log(right + tiny) - np.log(observed + tiny)


def _overrides(args: argparse.Namespace, run_dir: Path, epochs: int) -> list[str]:
    overrides = [
        f"seed={args.seed}",
        f"run_dir={run_dir}",
        f"device={args.device}",
        f"train.epochs={epochs}",
        f"train.threads={args.threads}",
        "train.progress=false",
        "train.record_dynamics=true",
        f"data.meta_per_class={args.meta_per_class}",
        f"shift.rho={args.rho}",
        f"shift.noise_rate={args.noise}",
        "loss.name=logit_adjustment",
    ]
    if args.data_root:
        overrides.append(f"data.options.root={args.data_root}")
    return overrides


def _per_class_auc(scores: np.ndarray, labels: np.ndarray, clean: np.ndarray, k: int) -> list:
    aucs = []
    for c in range(k):
        mine = labels == c
        auc = roc_auc(scores[mine], clean[mine] == c)
        aucs.append(None if np.isnan(auc) else round(auc, 4))
    return aucs


def _final(args, work: Path, name: str, relabel: Path) -> dict:
    config = load_config(
        "fashion-mnist-lt100-sym40",
        [*_overrides(args, work / name, args.final_epochs), f"data.relabel_file={relabel}"],
    )
    started = time.process_time()
    test = train_run(config).metrics["test"]
    return {
        "balanced_accuracy": test["balanced_accuracy"],
        "worst_class_accuracy": test["worst_class_accuracy"],
        "cpu_seconds": time.process_time() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5, help="epochs of the probe")
    parser.add_argument("--final-epochs", type=int, default=0, help="0: no final training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rho", type=float, default=100.0)
    parser.add_argument("--noise", type=float, default=0.4)
    parser.add_argument("--meta-per-class", type=int, default=10)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    add_update_docs_flag(parser)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sample-selection-"))
    config = load_config("fashion-mnist-lt100-sym40", _overrides(args, work / "probe", args.epochs))
    started = time.process_time()
    train_run(config, evaluate_test=False)
    probe_seconds = time.process_time() - started
    splits = build_splits(config)
    pool, k = splits.train, splits.num_classes
    probe = run_probe_outputs(config, splits)
    rarest = int(np.argmin(np.bincount(pool.clean_labels, minlength=k)))
    observed_counts = np.bincount(pool.labels, minlength=k)
    rarest5 = [int(c) for c in np.argsort(np.bincount(pool.clean_labels, minlength=k))[:5]]
    rows = []
    for detector, detector_options, rule, rule_options in COMBOS:
        settings = SelectionConfig(
            detector=detector,
            detector_options=detector_options,
            rule=rule,
            rule_options=rule_options,
        )
        path = work / f"{len(rows)}.npz"
        summary = run_selection(
            probe,
            settings,
            source_index=pool.source_index,
            path=path,
            clean_labels=pool.clean_labels,
        )
        scores = create_detector(detector, detector_options).observed_scores(probe)
        per_class = [
            {
                "class": c,
                "observed": int(observed_counts[c]),
                "kept": summary["per_class"][c]["kept"],
                "precision": summary["per_class"][c]["precision"],
                "recall": summary["per_class"][c]["recall"],
            }
            for c in range(k)
        ]
        judged = [r for r in per_class if r["precision"] is not None]
        worst = min(judged, key=lambda r: r["precision"])
        meets = all(
            r["precision"] >= TARGET_PRECISION and (r["recall"] or 0.0) >= TARGET_RECALL
            for r in judged
        )
        at_recall = _precision_at_recall(scores, pool.labels, pool.clean_labels, k, TARGET_RECALL)
        row = {
            "detector": _name(detector, detector_options),
            "rule": rule,
            "kept": summary["kept"],
            "precision": summary["precision"],
            "recall": summary["recall"],
            "rarest_precision": summary["per_class"][rarest]["precision"],
            "rarest_kept": summary["per_class"][rarest]["kept"],
            "relabelled": summary["relabelled"],
            "relabel_accuracy": summary["relabel_accuracy"],
            "noise_rate_after": summary["noise_rate_after"],
            "auc_per_class": _per_class_auc(scores, pool.labels, pool.clean_labels, k),
            "per_class": per_class,
            "rarest5": [per_class[c] for c in rarest5],
            "worst_class": worst,
            "meets_target": meets,
            "precision_at_70_recall": at_recall,
            "file": str(path),
        }
        rows.append(row)
        shown = ("file", "per_class", "rarest5", "auc_per_class")
        print(json.dumps({key: v for key, v in row.items() if key not in shown}), flush=True)

    assert probe.logits is not None
    oracle = _oracle_clean_scores(probe.logits, pool.labels, pool.clean_labels, k)
    oracle_row = {
        "score": "posterior under the true noise model (oracle)",
        "auc_per_class": _per_class_auc(oracle, pool.labels, pool.clean_labels, k),
        "precision_at_70_recall": _precision_at_recall(
            oracle, pool.labels, pool.clean_labels, k, TARGET_RECALL
        ),
    }
    print(json.dumps(oracle_row), flush=True)

    final = {}
    if args.final_epochs:
        perfect = work / "perfect.npz"
        labels = np.where(pool.noise_mask, -1, pool.labels)
        write_relabel_file(perfect, labels=labels, source_index=pool.source_index)
        final["perfect_filter"] = _final(args, work, "perfect", perfect)
        first = f"{rows[0]['detector']} + {rows[0]['rule']}"
        final[first] = _final(args, work, "first", Path(rows[0]["file"]))
        kept = read_relabel_file(Path(rows[0]["file"])).labels
        kept_right = work / "first-right.npz"
        labels = np.where(pool.noise_mask, -1, kept)
        write_relabel_file(kept_right, labels=labels, source_index=pool.source_index)
        final[f"{first}, its wrong labels removed"] = _final(args, work, "first-right", kept_right)
        print(json.dumps(final), flush=True)

    result = {
        "protocol": {
            "rho": args.rho,
            "noise": args.noise,
            "meta_per_class": args.meta_per_class,
            "probe_epochs": args.epochs,
            "final_epochs": args.final_epochs,
            "seed": args.seed,
            "pool_size": len(pool),
            "pool_noise_rate": pool.realised_noise_rate,
            "rarest_class": rarest,
            "rarest5_classes": rarest5,
            "observed_per_class": observed_counts.tolist(),
            "clean_per_class": np.bincount(pool.clean_labels, minlength=k).tolist(),
            "probe_cpu_seconds": probe_seconds,
        },
        "rows": [{key: v for key, v in row.items() if key != "file"} for row in rows],
        "oracle_score": oracle_row,
        "final": final,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sample_selection.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        f"Fashion-MNIST, rho = {args.rho:g}, {args.noise:.0%} symmetric noise, meta set "
        f"{args.meta_per_class} per class, logit-adjusted probe of {args.epochs} epochs, seed "
        f"{args.seed}; pool of {len(pool)} samples, {pool.realised_noise_rate:.1%} wrong labels; "
        f"rarest class {rarest}. Reproduce: `python benchmarks/sample_selection.py --epochs "
        f"{args.epochs} --final-epochs {args.final_epochs}`.",
        "",
        "| detector | rule | kept | precision | recall | rarest class: kept, precision | "
        "relabelled (accuracy) | noise after | AUC per class (min–max) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def pct(value: float | None) -> str:
        return "–" if value is None else f"{100 * value:.1f}"

    for row in rows:
        aucs = [a for a in row["auc_per_class"] if a is not None]
        lines.append(
            f"| {row['detector']} | {row['rule']} | {row['kept']} | {pct(row['precision'])} | "
            f"{pct(row['recall'])} | {row['rarest_kept']}, {pct(row['rarest_precision'])} | "
            f"{row['relabelled']} ({pct(row['relabel_accuracy'])}) | "
            f"{pct(row['noise_rate_after'])} | {min(aucs):.3f}–{max(aucs):.3f} |"
        )
    lines += [
        "",
        f"Per class (issue 19's target: every class >= {TARGET_PRECISION:.0%} precision at "
        f">= {TARGET_RECALL:.0%} recall). Worst class: the lowest precision, at its recall. "
        "P@70R: the lowest over classes of the precision of a class's top-scoring samples that "
        "hold 70% of its clean labels (no rule; what a perfect threshold could reach), and its "
        f"class. Five rarest classes (by clean count): {rarest5}.",
        "",
        "| detector | rule | worst class: precision / recall | meets target | min P@70R (class) "
        "| rarest five: precision / recall |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        worst = row["worst_class"]
        at = row["precision_at_70_recall"]
        judged = [(v, c) for c, v in enumerate(at) if v is not None]
        low, low_class = min(judged)
        rare = ", ".join(
            f"{r['class']}: {pct(r['precision'])} / {pct(r['recall'])}" for r in row["rarest5"]
        )
        lines.append(
            f"| {row['detector']} | {row['rule']} | {worst['class']}: {pct(worst['precision'])} / "
            f"{pct(worst['recall'])} | {'yes' if row['meets_target'] else 'no'} | "
            f"{pct(low)} ({low_class}) | {rare} |"
        )
    oracle_low = min(
        (v, c) for c, v in enumerate(oracle_row["precision_at_70_recall"]) if v is not None
    )
    lines.append(
        f"| {oracle_row['score']} | – | – | – | {pct(oracle_low[0])} ({oracle_low[1]}) | – |"
    )
    lines += [
        "",
        "Precision / recall of the kept labels, every class (observed count in the header):",
        "",
        "| detector | rule | " + " | ".join(f"{c} ({observed_counts[c]})" for c in range(k)) + " |",
        "|---|---|" + "---|" * k,
    ]
    for row in rows:
        cells = " | ".join(f"{pct(r['precision'])} / {pct(r['recall'])}" for r in row["per_class"])
        lines.append(f"| {row['detector']} | {row['rule']} | {cells} |")
    if final:
        lines += ["", f"Logit adjustment, {args.final_epochs} epochs, on the cleaned pool:", ""]
        lines += ["| training set | balanced acc. % | worst class % |", "|---|---|---|"]
        for name, measured in final.items():
            lines.append(
                f"| {name} | {pct(measured['balanced_accuracy'])} | "
                f"{pct(measured['worst_class_accuracy'])} |"
            )
    (args.out / "sample_selection.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if args.update_docs:
        update_docs(MARKERS, "\n".join(lines[1:]).strip("\n"), lines[0])


if __name__ == "__main__":
    main()
