"""The ``rank`` protocol's summary: the seed-to-seed ceiling, every fitness's tau-b against the
mean accuracy with a bootstrap interval, its CPU time per cell, the cell it would pick, and the
searches' best cells."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
from _csnas_common import bootstrap_tau_interval, fmt, kendall_tau_b
from _csnas_rank_study import TRAINING_FREE

LABEL_FREE = (*TRAINING_FREE, "contrastive", "simclr")


def _ranks(values: list[float]) -> np.ndarray:
    """Average ranks (1 = smallest) of ``values``, ties sharing their mean rank."""
    values = np.asarray(values, dtype=float)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    for v in np.unique(values):
        tied = values == v
        ranks[tied] = ranks[tied].mean()
    return ranks


def _accuracies(rows: list[dict], dataset: str, seeds: list[int]) -> dict[Any, list[float]]:
    """arch -> balanced accuracies of the random cells trained with every seed (in seed order)."""
    per: dict[Any, dict[int, float]] = defaultdict(dict)
    for r in rows:
        if r["unit"] == "cell" and r["dataset"] == dataset and r.get("origin") == "random":
            per[r["arch"]][r["train_seed"]] = r["balanced_accuracy"]
    return {a: [s[k] for k in seeds] for a, s in per.items() if all(k in s for k in seeds)}


def _reliability(first: list[float], second: list[float]) -> dict[str, Any]:
    """What the seed-to-seed agreement implies, under a normal model (accuracy = the cell's
    value + independent seed noise): r, the Pearson correlation of the two seeds; the tau-b a
    perfect predictor would reach against the mean of the two seeds (its correlation with that
    mean is sqrt(2r / (1 + r)), Spearman-Brown; tau = 2/pi arcsin(rho) for normal pairs); and the
    number k of seeds per cell whose means would agree with another k seeds' means at tau 0.6
    (reliability k r / (1 + (k - 1) r) >= sin(0.3 pi))."""
    r = float(np.corrcoef(first, second)[0, 1])
    if not np.isfinite(r) or r <= 0:
        return {"seed_pearson_r": r, "perfect_tau_vs_mean": None, "seeds_for_ceiling_0.6": None}
    target = np.sin(0.3 * np.pi)
    return {
        "seed_pearson_r": r,
        "perfect_tau_vs_mean": float(2 / np.pi * np.arcsin(np.sqrt(2 * r / (1 + r)))),
        "seeds_for_ceiling_0.6": int(np.ceil(target * (1 - r) / (r * (1 - target)))),
    }


def _entry(name: str, score: dict, accuracy: dict, **extra: Any) -> dict:
    """tau-b of ``score`` (higher = predicted better) against the mean accuracy, its interval,
    and the mean accuracy of the cell with the highest score."""
    archs = sorted(set(score) & set(accuracy))
    x = [score[a] for a in archs]
    y = [float(np.mean(accuracy[a])) for a in archs]
    low, high = bootstrap_tau_interval(x, y)
    picked = archs[int(np.argmax(x))] if archs else None
    return {
        "fitness": name,
        "cells": len(archs),
        "tau_b": kendall_tau_b(x, y),
        "interval": [low, high],
        "picked_arch": picked,
        "picked_accuracy": None if picked is None else float(np.mean(accuracy[picked])),
        **extra,
    }


def summarise(rows: list[dict], settings: dict) -> tuple[dict, str]:
    """The summary dict and its markdown tables from the study's rows (partial rows are fine)."""
    seeds = settings["seeds"]
    summary: dict[str, Any] = {"datasets": {}, "targets": {}}
    rank_lines = [
        "| dataset | fitness | labels | Kendall tau-b vs accuracy [95% CI] | CPU s / cell | "
        "% of contrastive | picked cell's bal. acc. % |",
        "|---|---|---|---|---|---|---|",
    ]
    search_lines = [
        "| dataset | search (TPE) | trials (complete / pruned) | search CPU s | best cell's bal. "
        "acc. % (seeds) | vs supervised |",
        "|---|---|---|---|---|---|",
    ]
    for dataset in settings["datasets"]:
        accuracy = _accuracies(rows, dataset, seeds)
        means = {a: float(np.mean(v)) for a, v in accuracy.items()}
        item: dict[str, Any] = {"cells": len(accuracy), "fitnesses": [], "searches": []}
        summary["datasets"][dataset] = item
        if len(accuracy) >= 3 and len(seeds) >= 2:
            first, second = ([v[i] for v in accuracy.values()] for i in (0, 1))
            diffs = np.subtract(first, second)
            item["ceiling"] = {
                "tau_b": kendall_tau_b(first, second),
                "interval": list(bootstrap_tau_interval(first, second)),
                "seed_sd": float(np.std(diffs, ddof=1) / np.sqrt(2)),
                "cell_sd": float(np.std(list(means.values()), ddof=1)),
                "accuracy_range": [min(means.values()), max(means.values())],
                "best": max(means.values()),
                "median": float(np.median(list(means.values()))),
                **_reliability(first, second),
            }
            c = item["ceiling"]
            rank_lines.append(
                f"| {dataset} | *seed {seeds[0]} vs seed {seeds[1]} (ceiling)* | – | "
                f"**{c['tau_b']:.2f}** [{c['interval'][0]:.2f}, {c['interval'][1]:.2f}] | – | – | "
                f"best {100 * c['best']:.1f}, median {100 * c['median']:.1f} |"
            )
        scores = [r for r in rows if r["unit"] == "score" and r["dataset"] == dataset]
        values: dict[str, dict[Any, float]] = defaultdict(dict)
        cpu: dict[str, list[float]] = defaultdict(list)
        for r in scores:
            values[r["fitness"]][r["arch"]] = -r["value"]  # higher = predicted better
            cpu[r["fitness"]].append(r["cpu_s"])
        contrastive_cpu = float(np.mean(cpu["contrastive"])) if cpu["contrastive"] else None
        entries = []
        for name in settings["rank_fitnesses"]:
            if not values[name]:
                continue
            seconds = float(np.mean(cpu[name]))
            fraction = None if not contrastive_cpu else seconds / contrastive_cpu
            entries.append(
                _entry(
                    name,
                    values[name],
                    accuracy,
                    cpu_s=seconds,
                    fraction_of_contrastive=fraction,
                    labels=name not in LABEL_FREE,
                )
            )
        for combination in settings.get("combinations", []):
            parts = combination.split("+")
            common = sorted(set.intersection(*(set(values[p]) for p in parts)))
            if len(common) < 3:
                continue
            ranks = [_ranks([values[p][a] for a in common]) for p in parts]
            score = dict(zip(common, np.mean(ranks, axis=0), strict=True))
            seconds = sum(float(np.mean(cpu[p])) for p in parts)
            fraction = None if not contrastive_cpu else seconds / contrastive_cpu
            entries.append(
                _entry(
                    f"rank average {combination}",
                    score,
                    accuracy,
                    cpu_s=seconds,
                    fraction_of_contrastive=fraction,
                    labels=False,
                )
            )
        # Baselines: the parameter count of the search network (from any score row) and of the
        # final network (from the trained cells): label-free and training-free too.
        search_params = {r["arch"]: r["search_params"] for r in scores}
        final_params = {
            r["arch"]: r["params"]
            for r in rows
            if r["unit"] == "cell" and r["dataset"] == dataset and r.get("origin") == "random"
        }
        for name, params in (
            ("params (search net)", search_params),
            ("params (final net)", final_params),
        ):
            if params:
                entries.append(_entry(name, params, accuracy, cpu_s=None, labels=False))
        item["fitnesses"] = entries
        for e in entries:
            low, high = (fmt(v, ".2f") for v in e["interval"])
            share = fmt(e.get("fraction_of_contrastive"), ".0f", 100)
            rank_lines.append(
                f"| {dataset} | {e['fitness']} | {'yes' if e['labels'] else 'no'} | "
                f"{fmt(e['tau_b'], '.2f')} [{low}, {high}] | {fmt(e.get('cpu_s'), '.2f')} | "
                f"{share} | {fmt(e['picked_accuracy'], '.1f', 100)} |"
            )
        _searches(rows, dataset, seeds, item, search_lines)
    _targets(summary, settings)
    md = (
        "Rank study: Kendall tau-b between each fitness (negated: higher = predicted better) and "
        f"the mean balanced test accuracy of {len(seeds)} trainings (seeds "
        f"{', '.join(map(str, seeds))}) of the same random cells; 95% bootstrap intervals over "
        "the cells (2000 resamples). The ceiling row is the tau-b between the two seeds' "
        "accuracies. CPU s / cell: mean CPU time of one score at the search proxy (one thread); "
        "% of contrastive: that time over the contrastive fitness's. Picked cell: the mean "
        "accuracy of the cell the fitness ranks first.\n\n" + "\n".join(rank_lines)
    )
    md += "\n\n" + "\n".join(_ceiling_notes(summary, seeds))
    md += "\n\nSearches (the best cell of each, trained like the random cells):\n\n"
    md += "\n".join(search_lines)
    md += "\n\nTargets: " + (
        ", ".join(
            f"{k}: {'met' if v else 'not met'}"
            for k, v in summary["targets"].items()
            if v is not None
        )
        or "not measured"
    )
    return summary, md


def _ceiling_notes(summary: dict, seeds: list[int]) -> list[str]:
    notes = []
    for dataset, item in summary["datasets"].items():
        c = item.get("ceiling")
        if c is None:
            continue
        low, high = c["accuracy_range"]
        k = c["seeds_for_ceiling_0.6"]
        notes.append(
            f"- {dataset}: {item['cells']} cells, mean accuracies {100 * low:.1f}–{100 * high:.1f}%"
            f" (sd {100 * c['cell_sd']:.2f} points), seed-to-seed sd {100 * c['seed_sd']:.2f} "
            f"points, Pearson r between the seeds {c['seed_pearson_r']:.2f}; a perfect predictor "
            f"would reach tau-b ~{fmt(c['perfect_tau_vs_mean'], '.2f')} against the "
            f"{len(seeds)}-seed mean; a seed-to-seed ceiling of 0.6 needs "
            + (f"~{k} seeds per cell" if k else "more than averaging seeds can give")
            + "."
        )
    return notes


def _searches(rows, dataset, seeds, item, lines) -> None:
    finals: dict[str, dict[int, float]] = defaultdict(dict)
    for r in rows:
        if (
            r["unit"] == "cell"
            and r["dataset"] == dataset
            and r.get("origin", "").startswith("search:")
        ):
            finals[r["origin"].split(":", 1)[1]][r["train_seed"]] = r["balanced_accuracy"]
    searches = {r["fitness"]: r for r in rows if r["unit"] == "search" and r["dataset"] == dataset}
    reference = finals.get("supervised", {})
    reference_mean = np.mean(list(reference.values())) if len(reference) == len(seeds) else None
    for fitness, search in searches.items():
        accs = finals.get(fitness, {})
        mean = float(np.mean(list(accs.values()))) if len(accs) == len(seeds) else None
        delta = None if mean is None or reference_mean is None else mean - reference_mean
        item["searches"].append(
            {
                "fitness": fitness,
                "states": search["states"],
                "cpu_s": search["cpu_s"],
                "wall_s": search["wall_s"],
                "best_value": search["best_value"],
                "accuracies": [accs.get(s) for s in seeds],
                "mean_accuracy": mean,
                "delta_vs_supervised": delta,
            }
        )
        per_seed = ", ".join(fmt(accs.get(s), ".1f", 100) for s in seeds)
        lines.append(
            f"| {dataset} | {fitness} | {search['states']['COMPLETE']} / "
            f"{search['states']['PRUNED']} | {search['cpu_s']:.0f} | {fmt(mean, '.1f', 100)} "
            f"({per_seed}) | {fmt(delta, '+.1f', 100) if fitness != 'supervised' else '–'} |"
        )


def _targets(summary: dict, settings: dict) -> None:
    """The issue's targets for the label-free fitness with the highest tau-b on each dataset."""
    targets = summary["targets"]
    for dataset, item in summary["datasets"].items():
        label_free = [
            e
            for e in item["fitnesses"]
            if e["fitness"] in TRAINING_FREE and np.isfinite(e["tau_b"])
        ]
        if not label_free:  # no accuracies yet: tau is nan
            continue
        best = max(label_free, key=lambda e: e["tau_b"])
        ceiling = item.get("ceiling", {}).get("tau_b")
        name = best["fitness"]
        targets[f"{dataset}_ceiling_at_least_0.6"] = None if ceiling is None else ceiling >= 0.6
        targets[f"{dataset}_{name}_tau_at_least_0.5"] = bool(best["tau_b"] >= 0.5)
        if ceiling is not None:
            targets[f"{dataset}_{name}_tau_at_least_2/3_ceiling"] = bool(
                best["tau_b"] >= 2 / 3 * ceiling
            )
        targets[f"{dataset}_{name}_interval_low_above_0.2"] = bool(best["interval"][0] > 0.2)
        fraction = best.get("fraction_of_contrastive")
        targets[f"{dataset}_{name}_compute_at_most_10pct_of_contrastive"] = (
            None if fraction is None else bool(fraction <= 0.1)
        )
        search = {s["fitness"]: s for s in item["searches"]}
        delta = search.get(name, {}).get("delta_vs_supervised")
        targets[f"{dataset}_tpe_{name}_within_1pt_of_supervised"] = (
            None if delta is None else bool(delta >= -0.01)
        )
