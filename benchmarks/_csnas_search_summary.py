"""The ``search`` protocol's summary: strategies' table, contrastive rank correlation, compute.

Split from ``architecture_search.py``; the table of the csnas-benchmark block of
docs/benchmarks.md comes from here (``python benchmarks/architecture_search.py
--summarise-only`` rebuilds it from the JSON lines).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from _csnas_common import fmt, kendall_tau_b

STRATEGIES = {
    "tpe-contrastive": ("tpe", "contrastive"),
    "random-contrastive": ("random", "contrastive"),
    "tpe-supervised": ("tpe", "supervised"),
}
RESNETS = ("resnet20", "resnet32")  # NAME or NAME@wW (a narrower one: first-stage width W)


def _mean_std(values: list[float], scale: float = 100.0) -> str:
    if not values:
        return "–"
    a = np.array(values) * scale
    return f"{a.mean():.2f}" if len(a) == 1 else f"{a.mean():.2f} ± {a.std():.2f}"


def compute_to_reach(search: dict, target: float) -> int | None:
    """Fitness-epochs a study spent until its best completed value first was <= ``target``."""
    spent = 0
    for trial in sorted(search["trials"], key=lambda t: t["number"]):
        spent += trial["epochs"]
        value = trial["value"] if trial["state"] == "COMPLETE" else None
        if value is not None and value <= target:
            return spent
    return None


def summarise(rows: list[dict], settings: dict) -> tuple[dict, str]:
    """The summary dict and its markdown from the unit rows (partial rows are fine)."""
    ok = [r for r in rows if "error" not in r]
    errors = [r for r in rows if "error" in r]
    searches = [r for r in ok if r["unit"] == "search" and r["strategy"] in STRATEGIES]
    finals = [r for r in ok if r["unit"] == "final"]
    fitness = [r for r in ok if r["unit"] == "fitness"]
    datasets = settings["datasets"]
    lines: list[str] = []
    summary: dict[str, Any] = {"strategies": [], "rank": [], "compute": [], "targets": {}}

    lines += [
        "| dataset | strategy | best fitness | search wall s | fitness-epochs | trials "
        "(complete / pruned) | params | mult-adds | test error % | bal. acc. % |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for dataset in datasets:
        for strategy in STRATEGIES:
            mine = [r for r in searches if r["dataset"] == dataset and r["strategy"] == strategy]
            done = [
                r
                for r in finals
                if r["role"] == "best" and r["dataset"] == dataset and r["strategy"] == strategy
            ]
            if not mine and not done:
                continue
            complete = sum(t["state"] == "COMPLETE" for r in mine for t in r["trials"])
            pruned = sum(t["state"] == "PRUNED" for r in mine for t in r["trials"])
            entry = {
                "dataset": dataset,
                "strategy": strategy,
                "best_fitness": [r["best_value"] for r in mine],
                "search_wall_s": [r["wall_s"] for r in mine],
                "fitness_epochs": [r["fitness_epochs"] for r in mine],
                "test_error": [r["test_error"] for r in done],
                "balanced_accuracy": [r["balanced_accuracy"] for r in done],
                "params": [r["params"] for r in done],
                "multiply_adds": [r["multiply_adds"] for r in done],
                "genotypes": [r["genotype"] for r in mine],
            }
            summary["strategies"].append(entry)
            lines.append(
                f"| {dataset} | {strategy} | "
                f"{fmt(np.mean(entry['best_fitness']) if mine else None, '.4f')} | "
                f"{fmt(np.mean(entry['search_wall_s']) if mine else None, '.0f')} | "
                f"{fmt(np.mean(entry['fitness_epochs']) if mine else None, '.0f')} | "
                f"{complete} / {pruned} | "
                f"{fmt(np.mean(entry['params']) / 1e6 if done else None, '.3f')} M | "
                f"{fmt(np.mean(entry['multiply_adds']) / 1e6 if done else None, '.1f')} M | "
                f"{_mean_std(entry['test_error'])} | {_mean_std(entry['balanced_accuracy'])} |"
            )
        for model in settings.get("resnets", RESNETS):
            done = [
                r
                for r in finals
                if r["role"] == "resnet" and r["dataset"] == dataset and r["model"] == model
            ]
            if not done:
                continue
            summary["strategies"].append(
                {
                    "dataset": dataset,
                    "strategy": model,
                    "test_error": [r["test_error"] for r in done],
                    "balanced_accuracy": [r["balanced_accuracy"] for r in done],
                    "params": [r["params"] for r in done],
                    "multiply_adds": [r["multiply_adds"] for r in done],
                }
            )
            lines.append(
                f"| {dataset} | {model} (hand-written) | – | – | – | – | "
                f"{done[0]['params'] / 1e6:.3f} M | {done[0]['multiply_adds'] / 1e6:.1f} M | "
                f"{_mean_std([r['test_error'] for r in done])} | "
                f"{_mean_std([r['balanced_accuracy'] for r in done])} |"
            )

    # Rank correlation on the first dataset: -fitness (lower fitness = better) vs test accuracy.
    seed0 = settings["seeds"][0]
    accuracy = {
        r["arch"]: r["balanced_accuracy"]
        for r in finals
        if r["role"] == "rank" and r["seed"] == seed0
    }
    rank_lines = [
        "| proxy | unlabeled images | fitness epochs | s / architecture | architectures | "
        "Kendall tau-b |",
        "|---|---|---|---|---|---|",
    ]
    for proxy in ("small", "search", "large"):
        mine = [r for r in fitness if r["proxy"] == proxy and r["arch"] in accuracy]
        if not mine:
            continue
        epochs = mine[0]["fitness_epochs"]
        for epoch in range(epochs):
            usable = [r for r in mine if len(r["history"]) > epoch]
            tau = kendall_tau_b(
                [-r["history"][epoch] for r in usable], [accuracy[r["arch"]] for r in usable]
            )
            seconds = float(np.mean([r["seconds"] for r in usable])) * (epoch + 1) / epochs
            item = {
                "proxy": proxy,
                "unlabeled_images": mine[0]["unlabeled_images"],
                "fitness_epochs": epoch + 1,
                "seconds_per_arch": seconds,
                "architectures": len(usable),
                "kendall_tau_b": tau,
            }
            summary["rank"].append(item)
            rank_lines.append(
                f"| {proxy} | {item['unlabeled_images']} | {epoch + 1} | {seconds:.1f} | "
                f"{len(usable)} | {fmt(tau, '.3f')} |"
            )
    summary["rank_points"] = [
        {
            "arch": r["arch"],
            "proxy": r["proxy"],
            "fitness": r["value"],
            "balanced_accuracy": accuracy.get(r["arch"]),
        }
        for r in fitness
    ]

    # Compute: TPE with pruning vs unpruned random trials (first dataset).
    compute_lines: list[str] = []
    reference = [r for r in ok if r["unit"] == "search" and r["strategy"] == "random-unpruned"]
    for ref in reference:
        tpe = [
            r
            for r in searches
            if r["strategy"] == "tpe-contrastive"
            and r["dataset"] == ref["dataset"]
            and r["seed"] == ref["seed"]
        ]
        if not tpe:
            continue
        spent = compute_to_reach(tpe[0], ref["best_value"])
        fraction = None if spent is None else spent / max(ref["fitness_epochs"], 1)
        item = {
            "dataset": ref["dataset"],
            "random_trials": len(ref["trials"]),
            "random_best": ref["best_value"],
            "random_fitness_epochs": ref["fitness_epochs"],
            "random_wall_s": ref["wall_s"],
            "tpe_best": tpe[0]["best_value"],
            "tpe_fitness_epochs_total": tpe[0]["fitness_epochs"],
            "tpe_fitness_epochs_to_reach": spent,
            "fraction": fraction,
        }
        summary["compute"].append(item)
        reached = (
            f"reached it after {spent} fitness-epochs = {100 * fraction:.0f}% of random's compute"
            if spent is not None
            else f"did not reach it in {tpe[0]['fitness_epochs']} fitness-epochs "
            f"({100 * tpe[0]['fitness_epochs'] / max(ref['fitness_epochs'], 1):.0f}% of random's"
            f" compute; its best {tpe[0]['best_value']:.4f})"
        )
        compute_lines.append(
            f"- {ref['dataset']}: {len(ref['trials'])} unpruned random trials reach fitness "
            f"{ref['best_value']:.4f} with {ref['fitness_epochs']} fitness-epochs "
            f"({ref['wall_s']:.0f} s); TPE with median pruning {reached}."
        )

    # Targets of the issue, measured.
    taus = [r["kendall_tau_b"] for r in summary["rank"] if r["proxy"] == "search"]
    final_tau = taus[-1] if taus else None
    targets = summary["targets"]
    targets["kendall_tau_at_least_0.4"] = None if final_tau is None else bool(final_tau >= 0.4)
    if summary["compute"]:
        fraction = summary["compute"][0]["fraction"]
        targets["tpe_within_25pct_of_random_compute"] = fraction is not None and fraction <= 0.25
    for dataset in datasets:
        best = [
            e
            for e in summary["strategies"]
            if e["dataset"] == dataset and e["strategy"] == "tpe-contrastive" and e["test_error"]
        ]
        resnets = [
            e
            for e in summary["strategies"]
            if e["dataset"] == dataset
            and e["strategy"] in settings.get("resnets", RESNETS)
            and e["test_error"]
        ]
        if best and resnets:
            cell_params = float(np.mean(best[0]["params"]))
            closest = min(resnets, key=lambda e: abs(np.mean(e["params"]) - cell_params))
            targets[f"{dataset}_cell_matches_{closest['strategy']}"] = bool(
                np.mean(best[0]["test_error"]) <= np.mean(closest["test_error"])
            )

    md = "\n".join(lines)
    md += "\n\nRank correlation between the contrastive fitness and the balanced test accuracy "
    md += (
        f"after final training ({datasets[0]}; tau-b of -fitness vs accuracy, so +1 means the "
        "fitness orders the architectures exactly as their accuracy does):\n\n"
    )
    md += "\n".join(rank_lines)
    if compute_lines:
        md += "\n\nCompute of the search (fitness-epochs: candidate training epochs, pruned "
        md += "trials count the epochs they ran):\n\n" + "\n".join(compute_lines)
    md += "\n\nTargets: " + (
        ", ".join(f"{k}: {'met' if v else 'not met'}" for k, v in targets.items() if v is not None)
        or "not measured"
    )
    if errors:
        md += f"\n\nFailed units: {len(errors)} (see the JSON)."
    summary["errors"] = errors
    return summary, md
