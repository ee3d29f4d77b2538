"""How well the noise model is estimated: GLC's estimate against the confusion estimate.

Protocol (issue 13): Fashion-MNIST, long tail ρ = 100, then 40% symmetric or pair-flip noise,
meta set of 10 clean images per class. A *probe* (the project's ``small_cnn``) is trained on the
noisy pool for 5 epochs with cross-entropy or with logit adjustment at the observed counts (the
epoch selected on the meta set, as every run is). From its logits, three estimates of the noise
model (``autorobust.methods.glc.noise_model.estimate_noise_model``):

- ``glc``: T̂_i = the probe's noisy-label posterior averaged over the meta images of class i;
- ``confusion``: T̂ and n̂ from the joint counts of the probe's predicted clean class and the
  observed label on the pool;
- ``confusion_corrected``: the same with the probe's meta-set confusion undone;
- ``confusion_shrunk``: the same with that confusion shrunk towards the identity by 10 pseudo-
  counts per class first (half way, with 10 meta images per class).

Each is compared with the pool's realised transition matrix and clean counts: row L1 error of T̂
(mean and max over the 10 rows), total variation between the estimated and the true prior, the
largest |log π̂_c − log π_c| (what a logit-adjustment offset τ log π̂ is off by, per unit τ), and
the classes whose estimate fell to the floor. The observed counts are the baseline any estimate
of the prior must beat.

    python benchmarks/noise_model.py                       # 3 seeds x 2 noises x 2 probes
    python benchmarks/noise_model.py --seeds 0 --noise symmetric --logits-dir /tmp/probes

Results go to ``benchmarks/results/noise_model.{json,md}``; with ``--logits-dir`` the probes'
logits are kept there (``NOISE_SEED_PROBE.npz``) and reused by a later run; with ``--models-dir``
every estimate is written as a noise model file (``NOISE_SEED_PROBE_ESTIMATOR.json``) that loss
``forward_corrected`` can train with (``loss.options.noise_model_file``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from _common import add_update_docs_flag, run_jobs, write_results
from _noise_aware_units import NOISES as UNIT_NOISES

RESULTS = Path(__file__).resolve().parent / "results"
MARKERS = ("<!-- noise-model-benchmark:start -->", "<!-- noise-model-benchmark:end -->")
PROBES = ("cross_entropy", "logit_adjustment")
ESTIMATORS = ("glc", "confusion", "confusion_corrected", "confusion_shrunk")
CHECKED = ("checked", "checked_pool", "checked_fitted")
# The noise-aware benchmark's noises, under this benchmark's names.
NOISES: dict[str, list[str]] = {
    "symmetric": UNIT_NOISES["sym40"],
    "pair": UNIT_NOISES["pair40"],
    "h2t": UNIT_NOISES["h2t40"],
}


def _stem(job: dict[str, Any]) -> str:
    """The name of a cell's files: noise, ρ, n_max, seed, probe (and the probe's epochs)."""
    return (
        f"{job['noise']}_rho{job['rho']}_n{job['n_max']}_s{job['seed']}_{job['probe']}"
        f"_e{job['epochs']}"
    )


def probe_logits(job: dict[str, Any]) -> dict[str, Any]:
    """Train (or load from ``logits_dir``) one probe; return its logits and the pool's truth."""
    import numpy as np
    import torch

    from autorobust.config import load_config
    from autorobust.data.tensors import images_to_tensor
    from autorobust.experiment import build_model, build_splits
    from autorobust.losses import create_loss
    from autorobust.train.trainer import Trainer, predict

    torch.set_num_threads(job["threads"])
    overrides = [
        "data.meta_per_class=10", "train.progress=false", f"device={job['device']}",
        f"seed={job['seed']}", f"train.epochs={job['epochs']}", f"train.threads={job['threads']}",
        f"shift.rho={job['rho']}", *NOISES[job["noise"]],
    ]  # fmt: skip
    if job["n_max"] is not None:
        overrides.append(f"shift.n_max={job['n_max']}")
    if job["data_root"]:
        overrides.append(f"data.options.root={job['data_root']}")
    config = load_config("fashion-mnist-lt100-sym40", overrides)
    splits = build_splits(config)
    pool = splits.train
    cache = None
    if job["logits_dir"]:
        cache = Path(job["logits_dir"]) / f"{_stem(job)}.npz"
    if cache is not None and cache.exists():
        stored = np.load(cache)
        logits = {key: stored[key] for key in ("meta", "pool", "test")}
        cpu = float(stored["cpu"])
    else:
        counts = np.bincount(pool.labels, minlength=splits.num_classes)
        device = torch.device(job["device"])
        trainer = Trainer(
            model=build_model(config, splits),
            loss=create_loss(job["probe"], class_counts=counts),
            settings=config.train,
            device=device,
            seed=config.seed,
        )
        started = time.process_time()
        result = trainer.fit(pool, splits.meta)
        cpu = time.process_time() - started

        def run(images: np.ndarray) -> np.ndarray:
            tensor = images_to_tensor(images, device)
            return predict(result.model, tensor, trainer.normalize).numpy()

        logits = {
            "meta": run(splits.meta.images),
            "pool": run(pool.images),
            "test": run(splits.test.images),
        }
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, cpu=cpu, **logits)
    predicted = logits["test"].argmax(1)
    per_class = [
        float((predicted[splits.test.labels == c] == c).mean()) for c in range(splits.num_classes)
    ]
    return {
        **job,
        "logits": logits,
        "labels": pool.labels,
        "clean": pool.clean_labels,
        "meta_labels": splits.meta.labels,
        "probe_cpu_s": cpu,
        "probe_test_balanced": statistics.fmean(per_class),
        "probe_test_worst": min(per_class),
        "probe_pool_agreement": float((logits["pool"].argmax(1) == pool.clean_labels).mean()),
    }


def estimate_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The three estimates of one probe and their errors, one row each."""
    import numpy as np

    from autorobust.methods.glc.noise_model import (
        estimate_noise_model,
        noise_model_errors,
        true_transition,
    )

    k = 10
    labels, clean, logits = result["labels"], result["clean"], result["logits"]
    truth = true_transition(clean, labels, k), np.bincount(clean, minlength=k)
    tau = 1.0 if result["probe"] == "logit_adjustment" else 0.0
    common = {"observed_labels": labels, "num_classes": k, "probe_tau": tau}
    # The probe's fitted posterior z + τ log π̃ (its prediction on the pool's label distribution)
    # instead of the balanced argmax z: the classifier whose confusion the shrinkage of M towards
    # the identity biases least, since it misclassifies the fewest pool images.
    fitted = tau * np.log(np.bincount(labels, minlength=k) / len(labels))
    models = {
        "glc": estimate_noise_model(
            method="glc", meta_logits=logits["meta"], meta_labels=result["meta_labels"], **common
        ),
        "confusion": estimate_noise_model(
            method="confusion", pool_logits=logits["pool"], correct_confusion=False, **common
        ),
        "confusion_corrected": estimate_noise_model(
            method="confusion", pool_logits=logits["pool"], meta_logits=logits["meta"],
            meta_labels=result["meta_labels"], pseudo_count=0.0, **common,
        ),
        "confusion_shrunk": estimate_noise_model(  # the defaults
            method="confusion", pool_logits=logits["pool"], meta_logits=logits["meta"],
            meta_labels=result["meta_labels"], **common,
        ),
        "checked": estimate_noise_model(  # the defaults, checked and shrunk
            method="confusion", pool_logits=logits["pool"], meta_logits=logits["meta"],
            meta_labels=result["meta_labels"], check=True, **common,
        ),
        "checked_pool": estimate_noise_model(  # M shrunk towards the pool's confusion, checked
            method="confusion", pool_logits=logits["pool"], meta_logits=logits["meta"],
            meta_labels=result["meta_labels"], confusion_target="pool", check=True, **common,
        ),
        "checked_fitted": estimate_noise_model(  # predictions from the fitted posterior, checked
            method="confusion", pool_logits=logits["pool"] + fitted,
            meta_logits=logits["meta"] + fitted, meta_labels=result["meta_labels"], check=True,
            **common,
        ),
    }  # fmt: skip
    if result["models_dir"]:
        stem = f"{result['noise']}_{result['seed']}_{result['probe']}"
        for name, model in models.items():
            model.save(Path(result["models_dir"]) / f"{stem}_{name}.json")
    observed_prior = np.bincount(labels, minlength=k) / len(labels)
    true_prior = truth[1] / truth[1].sum()
    rows = []
    for name, model in models.items():
        errors = noise_model_errors(model, *truth)
        rows.append(
            {
                "noise": result["noise"],
                "rho": result["rho"],
                "n_max": result["n_max"],
                "seed": result["seed"],
                "probe": result["probe"],
                "estimator": name,
                "row_l1_mean": errors["transition_row_l1_mean"],
                "row_l1_max": errors["transition_row_l1_max"],
                "row_l1": errors["transition_row_l1"],
                "diagonal_error_min": errors["transition_diagonal_error_min"],
                "diagonal_error": errors["transition_diagonal_error"],
                "prior_tv": errors["prior_total_variation"],
                "log_ratio_max": errors["prior_log_ratio_max"],
                "log_ratio": errors["prior_log_ratio"],
                "floored": model.info["floored_classes"],
                "check": None if model.check is None else model.check.to_dict(),
                "observed_tv": errors["observed_prior_total_variation"],
                "observed_log_ratio_max": float(
                    np.abs(np.log(observed_prior) - np.log(true_prior)).max()
                ),
                "probe_cpu_s": result["probe_cpu_s"],
                "probe_test_balanced": result["probe_test_balanced"],
                "probe_test_worst": result["probe_test_worst"],
                "probe_pool_agreement": result["probe_pool_agreement"],
            }
        )
    return rows


def _cell(values: list[float], digits: int = 2) -> str:
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def summarise(rows: list[dict[str, Any]]) -> str:
    """Markdown table: per (ρ, noise) cell, mean (min–max over seeds) of the prior's total
    variation to the truth for the observed counts and every estimator, and the check's
    decisions (status and λ per seed) for the checked ones."""
    header = (
        "| ρ | noise | probe bal. acc. % | observed counts | "
        + " | ".join(ESTIMATORS + CHECKED)
        + " | "
        + " | ".join(f"{name} decision" for name in CHECKED)
        + " |\n|"
        + "---|" * (4 + len(ESTIMATORS) + 2 * len(CHECKED))
    )
    lines = [header]
    for rho, noise in dict.fromkeys((row["rho"], row["noise"]) for row in rows):
        cell = [row for row in rows if row["rho"] == rho and row["noise"] == noise]
        first = [row for row in cell if row["estimator"] == ESTIMATORS[0]]
        accuracy = f"{statistics.fmean(100 * r['probe_test_balanced'] for r in first):.1f}"
        values = [_cell([r["observed_tv"] for r in first], 3)]
        for name in ESTIMATORS + CHECKED:
            values.append(_cell([r["prior_tv"] for r in cell if r["estimator"] == name], 3))
        for name in CHECKED:
            values.append(
                " ".join(
                    f"{r['check']['status']} {r['check']['shrinkage']:.2f}"
                    for r in cell
                    if r["estimator"] == name
                )
            )
        lines.append(f"| {rho} | {noise} | {accuracy} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--noise", nargs="+", default=list(NOISES), choices=list(NOISES))
    parser.add_argument("--rho", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--n-max", type=int, default=1500, help="head class size (0: all)")
    parser.add_argument("--probes", nargs="+", default=["logit_adjustment"], choices=PROBES)
    parser.add_argument("--epochs", type=int, default=5, help="probe epochs")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--workers", type=int, default=1, help="parallel processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--data-root", default=None, help="Fashion-MNIST folder")
    parser.add_argument("--logits-dir", default=None, help="keep / reuse the probes' logits")
    parser.add_argument(
        "--models-dir", default=None, help="write every estimate as a noise model JSON file"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    add_update_docs_flag(parser)
    args = parser.parse_args(argv)
    jobs = [
        {"noise": noise, "rho": rho, "n_max": args.n_max or None, "seed": seed, "probe": probe,
         "epochs": args.epochs, "device": args.device, "threads": args.threads,
         "data_root": args.data_root, "logits_dir": args.logits_dir,
         "models_dir": args.models_dir}
        for rho in args.rho for noise in args.noise for seed in args.seeds for probe in args.probes
    ]  # fmt: skip
    rows = [
        row
        for result in run_jobs(probe_logits, jobs, args.workers)
        for row in estimate_rows(result)
    ]
    table = summarise(rows)
    probe_cpu = statistics.fmean(row["probe_cpu_s"] for row in rows)
    argv_used = [
        "--seeds", *map(str, args.seeds), "--noise", *args.noise, "--rho", *map(str, args.rho),
        "--n-max", str(args.n_max), "--probes", *args.probes, "--epochs", str(args.epochs),
        "--logits-dir", "/tmp/probes",
    ]  # fmt: skip
    note = (
        f"Fashion-MNIST, long tail ρ in {args.rho}, n_max {args.n_max}, 40% symmetric or pair "
        f"noise or head-to-tail noise (keep 0.6), meta set 10 per class; probes `small_cnn` "
        f"({', '.join(args.probes)}), {args.epochs} epochs, {probe_cpu:.0f} CPU-s each on one "
        f"thread; seeds {', '.join(map(str, args.seeds))}. Entries: total variation between the "
        f"prior (n̂ / N) and the pool's true clean prior, mean (min–max) over seeds; `checked`: "
        f"the default estimate with `check=True` (bootstrap James–Stein shrinkage towards no "
        f"noise), `checked_pool`: the same with `confusion_target='pool'`, `checked_fitted`: "
        f"the same as `checked` with the probe's predictions taken from its fitted posterior "
        f"z + τ log π̃ instead of argmax z; decisions per seed (status, λ). Reproduce: "
        f"`python benchmarks/noise_model.py {' '.join(argv_used)}`."
    )
    write_results(
        args.out,
        "noise_model",
        note=note,
        table=table,
        payload={"rows": rows},
        markers=MARKERS if args.update_docs else None,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
