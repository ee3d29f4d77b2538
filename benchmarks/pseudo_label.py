"""Does training on the rejected samples without labels (``method: pseudo_label``) help?

The protocol of issue 13, item 3: Fashion-MNIST, long tail rho = 100, 40% symmetric noise, a meta
set of 10 clean images per class. Per seed:

1. probe: logit adjustment for ``--probe-epochs`` epochs on the noisy pool;
2. selection: ``methods.sample_selection.run_selection`` with the defaults (posterior detector,
   ``meta_quantile`` q = 0.1) and no relabelling -> a relabel file;
3. ``--epochs`` epochs of logit adjustment on the kept samples with (a) ``method: erm`` and
   (b) ``method: pseudo_label`` (each ``--variant``: its overrides), reporting balanced and
   worst-class test accuracy, the CPU seconds per epoch (``time.process_time``, one thread) and,
   for (b), the fraction of drawn rejected images pseudo-labelled and those labels' accuracy.

    OMP_NUM_THREADS=1 python benchmarks/pseudo_label.py --seeds 0 1

Every finished unit is appended to ``results/pseudo_label.jsonl`` and skipped when the script
runs again; the summary goes to ``results/pseudo_label.json`` and ``.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from autorobust.config import load_config
from autorobust.data.relabel import read_relabel_file
from autorobust.experiment import build_splits, train_run
from autorobust.methods.sample_selection import (
    SelectionConfig,
    run_probe_outputs,
    run_selection,
)

RESULTS = Path(__file__).resolve().parent / "results"
# The defaults, and the labels' counts alone as the prior of the loss.
DEFAULT_VARIANTS = ["pseudo_label:", "labels-prior:pseudo_label.prior=labels"]


def _overrides(args: argparse.Namespace, seed: int, run_dir: Path, epochs: int) -> list[str]:
    overrides = [
        f"seed={seed}",
        f"run_dir={run_dir}",
        f"device={args.device}",
        f"train.epochs={epochs}",
        f"train.threads={args.threads}",
        "train.progress=false",
        "data.meta_per_class=10",
        "loss.name=logit_adjustment",
    ]
    if args.data_root:
        overrides.append(f"data.options.root={args.data_root}")
    return overrides


def _selection(args: argparse.Namespace, seed: int, work: Path) -> tuple[Path, dict]:
    """The probe and the relabel file of ``seed`` (reused when the file exists)."""
    path = work / f"seed{seed}" / "relabel.npz"
    info_path = path.with_suffix(".json")
    if path.is_file() and info_path.is_file():
        return path, json.loads(info_path.read_text())
    config = load_config(
        "fashion-mnist-lt100-sym40",
        _overrides(args, seed, work / f"seed{seed}" / "probe", args.probe_epochs),
    )
    started = time.process_time()
    train_run(config, evaluate_test=False, overwrite=True)
    probe_seconds = time.process_time() - started
    splits = build_splits(config)
    pool = splits.train
    probe = run_probe_outputs(config, splits)
    summary = run_selection(
        probe,
        SelectionConfig(relabel=False),
        source_index=pool.source_index,
        path=path,
        clean_labels=pool.clean_labels,
    )
    dropped = read_relabel_file(path).labels == -1
    info = {
        "pool": len(pool),
        "kept": summary["kept"],
        "rejected": len(pool) - summary["kept"],
        "precision": summary["precision"],
        "recall": summary["recall"],
        "relabelled": summary["relabelled"],
        # Of the rejected samples, the fraction whose observed label was right (recall's loss).
        "rejected_clean_fraction": float((~pool.noise_mask[dropped]).mean()),
        "probe_cpu_seconds": probe_seconds,
    }
    info_path.write_text(json.dumps(info))
    return path, info


def _final(args, seed: int, work: Path, name: str, relabel: Path, extra: list[str]) -> dict:
    config = load_config(
        "fashion-mnist-lt100-sym40",
        [
            *_overrides(args, seed, work / f"seed{seed}" / name, args.epochs),
            f"data.relabel_file={relabel}",
            *extra,
        ],
    )
    started = time.process_time()
    metrics = train_run(config, overwrite=True).metrics
    seconds = time.process_time() - started
    test = metrics["test"]
    row = {
        "seed": seed,
        "variant": name,
        "overrides": extra,
        "balanced_accuracy": test["balanced_accuracy"],
        "worst_class_accuracy": test["worst_class_accuracy"],
        "per_class_accuracy": test.get("per_class_accuracy"),
        "best_epoch": metrics["run"]["best_epoch"],
        "cpu_seconds": seconds,
        "cpu_seconds_per_epoch": seconds / args.epochs,
    }
    method = metrics.get("method")
    if method:
        row["pseudo_label"] = {
            "rejected": method["rejected"],
            "fraction": [e["pseudo_labelled_fraction"] for e in method["per_epoch"]],
            "accuracy": [e["pseudo_label_accuracy"] for e in method["per_epoch"]],
            "last_class_counts": method["per_epoch"][-1]["pseudo_label_class_counts"],
        }
    return row


def _variants(specs: list[str]) -> list[tuple[str, list[str]]]:
    """``name:a.b=1,c.d=2`` -> (name, [method=pseudo_label, a.b=1, c.d=2])."""
    variants = []
    for spec in specs:
        name, _, rest = spec.partition(":")
        overrides = [item for item in rest.split(",") if item]
        variants.append((name, ["method=pseudo_label", *overrides]))
    return variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--probe-epochs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument(
        "--variant",
        action="append",
        default=None,
        help="NAME:override,override (pseudo_label runs; default: DEFAULT_VARIANTS)",
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--work", type=Path, default=Path("runs/benchmark-pseudo-label"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--summarise-only", action="store_true", help="train nothing; summarise the units done"
    )
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "pseudo_label.jsonl"
    done = {}
    if log.is_file():
        for line in log.read_text().splitlines():
            row = json.loads(line)
            done[(row["seed"], row["variant"])] = row
    units = [("erm", []), *_variants(args.variant or DEFAULT_VARIANTS)]
    selections = {}
    for seed in args.seeds:
        relabel, selections[seed] = _selection(args, seed, args.work)
        print(json.dumps({"seed": seed, "selection": selections[seed]}), flush=True)
        for name, extra in units:
            if args.summarise_only or (
                (seed, name) in done and done[(seed, name)]["overrides"] == extra
            ):
                continue
            row = _final(args, seed, args.work, name, relabel, extra)
            done[(seed, name)] = row
            with log.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            print(
                json.dumps({k: v for k, v in row.items() if k != "per_class_accuracy"}), flush=True
            )

    _summarise(args, units, done, selections)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _summarise(args, units, done, selections) -> None:
    seeds = [s for s in args.seeds if (s, "erm") in done]
    lines = [
        f"Fashion-MNIST, rho = 100, 40% symmetric noise, meta set 10 per class; probe: logit "
        f"adjustment, {args.probe_epochs} epochs; selection: posterior + meta_quantile (q = 0.1), "
        f"no relabelling; then {args.epochs} epochs of logit adjustment on the kept samples; "
        "CPU seconds per epoch on one thread (x erm: against erm on the same seeds). Reproduce: "
        "`OMP_NUM_THREADS=1 python benchmarks/pseudo_label.py --seeds "
        f"{' '.join(map(str, seeds))}` (add `--variant NAME:key=value,...` for other settings).",
        "",
        "| seed | pool | kept | rejected | kept precision % | rejected with a right label % |",
        "|---|---|---|---|---|---|",
    ]
    for seed in seeds:
        info = selections[seed]
        lines.append(
            f"| {seed} | {info['pool']} | {info['kept']} | {info['rejected']} | "
            f"{_pct(info['precision'])} | {_pct(info['rejected_clean_fraction'])} |"
        )
    lines += [
        "",
        "| method | settings | seeds | balanced acc. % (per seed) | mean | worst class % (per "
        "seed) | mean | CPU s / epoch | × erm | pseudo-labelled % (last epoch) | their "
        "accuracy % |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    summary = []
    for name, extra in units:
        have = [s for s in seeds if (s, name) in done]
        if not have:
            continue
        rows = [done[(s, name)] for s in have]
        bacc = [r["balanced_accuracy"] for r in rows]
        worst = [r["worst_class_accuracy"] for r in rows]
        cost = statistics.mean(r["cpu_seconds_per_epoch"] for r in rows)
        erm_cost = statistics.mean(done[(s, "erm")]["cpu_seconds_per_epoch"] for s in have)
        fraction = accuracy = "–"
        if rows[0].get("pseudo_label"):
            fraction = ", ".join(_pct(r["pseudo_label"]["fraction"][-1]) for r in rows)
            accuracy = ", ".join(_pct(r["pseudo_label"]["accuracy"][-1]) for r in rows)
        settings = ", ".join(o for o in extra if not o.startswith("method=")) or "defaults"
        lines.append(
            f"| {'erm' if name == 'erm' else 'pseudo_label'} | {settings if name != 'erm' else '–'}"
            f" | {', '.join(map(str, have))} | {', '.join(_pct(b) for b in bacc)} | "
            f"{_pct(float(np.mean(bacc)))} | "
            f"{', '.join(_pct(w) for w in worst)} | {_pct(float(np.mean(worst)))} | "
            f"{cost:.1f} | {cost / erm_cost:.2f} | {fraction} | {accuracy} |"
        )
        summary.append(
            {
                "variant": name,
                "overrides": extra,
                "seeds": have,
                "balanced_accuracy": bacc,
                "worst_class_accuracy": worst,
                "cpu_seconds_per_epoch": cost,
                "cost_vs_erm": cost / erm_cost,
            }
        )
    (args.out / "pseudo_label.json").write_text(
        json.dumps({"selections": selections, "summary": summary}, indent=1) + "\n"
    )
    (args.out / "pseudo_label.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
