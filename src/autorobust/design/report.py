"""The report of ``autorobust design``: ``design.md`` and its plots.

It says what was chosen and why (every trial's meta score with the standard error of its
difference to the best), what each component contributed, the estimated noise model (and its
error when the shift was simulated), what the selection kept, and the cost.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from autorobust._io import write_text
from autorobust.design.scoring import SCORE_LABELS
from autorobust.report.plots import save_figure

if TYPE_CHECKING:
    from autorobust.design._state import DesignRun

__all__ = ["REPORT_NAME", "noise_model_plot", "trials_plot", "write_report"]

REPORT_NAME = "design.md"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def noise_model_plot(report: dict[str, Any], class_names: list[str], path: Path) -> Path:
    """T̂ as a heatmap (beside the true matrix when known), and the class counts: observed,
    estimated clean n̂, and true clean counts when known."""
    plt = _pyplot()
    estimate = report["estimate"]
    error = report.get("error")
    panels = 3 if error else 2
    figure, axes = plt.subplots(1, panels, figsize=(5 * panels, 4.2))
    t_hat = np.asarray(estimate["transition"])
    image = axes[0].imshow(t_hat, vmin=0.0, vmax=1.0, cmap="viridis")
    axes[0].set_title(f"estimated T ({estimate['method']})")
    axes[0].set_xlabel("observed label")
    axes[0].set_ylabel("true class")
    figure.colorbar(image, ax=axes[0], fraction=0.046)
    counts_ax = axes[-1]
    k = len(class_names)
    x = np.arange(k)
    counts_ax.bar(x - 0.27, estimate["observed_counts"], width=0.27, label="observed labels")
    counts_ax.bar(x, estimate["clean_counts"], width=0.27, label="estimated clean n̂")
    if error:
        counts_ax.bar(x + 0.27, error["true_counts"], width=0.27, label="true clean")
        difference = axes[1].imshow(
            t_hat - np.asarray(_true_transition(error, t_hat)), vmin=-0.5, vmax=0.5, cmap="RdBu"
        )
        axes[1].set_xlabel("observed label")
        figure.colorbar(difference, ax=axes[1], fraction=0.046)
        axes[1].set_title(f"estimate - truth (mean row L1 {error['transition_row_l1_mean']:.2f})")
    counts_ax.set_yscale("log")
    counts_ax.set_xticks(x, class_names, rotation=60, ha="right", fontsize=7)
    counts_ax.set_title("class counts")
    counts_ax.legend(fontsize=7)
    figure.tight_layout()
    return save_figure(figure, path)


def _true_transition(error: dict[str, Any], like: np.ndarray) -> np.ndarray:
    # noise_model_errors keeps the row errors, not the matrix; the report keeps the truth.
    return np.asarray(error.get("true_transition", like))


def trials_plot(
    trials: list[dict[str, Any]], path: Path, score_label: str = SCORE_LABELS["log_loss"]
) -> Path:
    """Each trial's meta score with one standard error of its difference to the best."""
    plt = _pyplot()
    ordered = sorted(trials, key=lambda r: r["trial"])
    figure, axis = plt.subplots(figsize=(7, 0.35 * len(ordered) + 1.2))
    y = np.arange(len(ordered))
    scores = [r["score"] for r in ordered]
    errors = [r["standard_error"] for r in ordered]
    colours = ["tab:red" if r["chosen"] else "tab:blue" for r in ordered]
    axis.errorbar(scores, y, xerr=errors, fmt="none", ecolor="grey")
    axis.scatter(scores, y, c=colours, zorder=3)
    axis.set_yticks(y, [f"#{r['trial']} {r['name']}" for r in ordered], fontsize=7)
    axis.invert_yaxis()
    axis.set_xlabel(f"{score_label} (lower is better); red: chosen")
    figure.tight_layout()
    return save_figure(figure, path)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def write_report(run_dir: Path, summary: dict[str, Any], state: DesignRun) -> Path:
    """Write ``run_dir/design.md`` (and its plots) from the design's summary; return its path."""
    names = list(state.splits.class_names)
    noise = summary["noise_model"]
    noise_model_plot(noise, names, run_dir / "noise_model.png")
    trials = [r for r in summary["trials"] if r.get("trial") is not None]
    label = SCORE_LABELS[summary.get("score", "log_loss")]
    if trials:
        trials_plot(trials, run_dir / "design_trials.png", label)
    chosen = summary["chosen"]
    lines = [f"# Design report: {run_dir}", ""]
    lines += ["## Chosen design", "", f"**{chosen['name']}**", ""]
    for key, value in chosen["design"].items():
        if value is not None:
            lines.append(f"- {key}: `{value}`")
    lines.append("")
    final = summary.get("final")
    if final:
        settings = state.config.design
        which = (
            "best design of each noise treatment at the first rung (in the order of their "
            "scores, then the best of the rest)"
            if settings.finalists_across_treatments
            else "best designs of the first rung"
        )
        if settings.reference_final:
            which = f"reference design and the {which}"
        lines += [
            "### Finalists at full epochs",
            "",
            f"The {len(final['candidates'])} finalists, the {which}, continued to "
            f"{final['epochs']} epochs (the rest of their schedule) and were compared there by "
            f"their {label}; the simplest within one standard error of the best is kept. A "
            "design fitted on the meta set (MW-Net, AutoBalance) is scored only on the half it "
            f"was not fitted on. Kept finalist: **{summary['final_name']}**.",
            "",
            f"| design | {label} | difference to best ± SE | meta images scored | folder | |",
            "|---|---|---|---|---|---|",
        ]
        ensemble = final.get("ensemble")
        if ensemble:
            verdict = (
                "kept: it is the design's model (`best/ensemble.json`)"
                if ensemble["kept"]
                else "not kept"
            )
            lines[-2:-2] = [
                "Their ensemble (the mean of their calibrated probabilities) is one more "
                "candidate, the most complex, so it is kept only when it beats every finalist "
                f"by more than one standard error. It scored {ensemble['score']:.4f} against "
                f"{ensemble['best_finalist_score']:.4f} for the best finalist on the "
                f"{ensemble['scored_images']} meta images both may be scored on (difference "
                f"{ensemble['difference']:+.4f} ± {ensemble['standard_error']:.4f}): {verdict}. "
                "The differences in the table below are to the best candidate, the ensemble "
                "included.",
                "",
            ]
        for row in final["candidates"]:
            lines.append(
                f"| {row['name']} | {row['score']:.4f} | {row['difference_to_best']:+.4f} ± "
                f"{row['standard_error']:.4f} | {row.get('scored_images', '')} | "
                f"`{row['run_dir']}` | {'kept' if row['kept'] else ''} |"
            )
        lines.append("")
    refit = summary.get("refit")
    if refit and refit["refit_test"] is None:
        lines += [
            "### Refit on everything clean",
            "",
            f"The chosen design was {refit['reason']} (`design.budget`): the refit comes after "
            "the reference designs and the finalists in the budget. `best/` is the design's "
            "model.",
            "",
        ]
    elif refit:
        best, again = refit["best_test"], refit["refit_test"]
        lines += [
            "### Refit on everything clean",
            "",
            "The chosen design was trained once more from scratch on the pool plus the clean meta "
            "images (`refit/`), and that model is the design's. On the test split: balanced "
            f"accuracy {_pct(again['balanced_accuracy'])}% against "
            f"{_pct(best['balanced_accuracy'])}% without the meta images (`best/`), worst class "
            f"{_pct(again['worst_class_accuracy'])}% against "
            f"{_pct(best['worst_class_accuracy'])}%. The meta images also selected the refit's "
            "epoch, so its validation numbers are optimistic.",
            "",
        ]
    test = summary.get("test")
    if test:
        lines += [
            "The design's model (trained with the full epoch budget) on the test split: balanced "
            "accuracy "
            f"{_pct(test['balanced_accuracy'])}%, "
            f"worst class {_pct(test['worst_class_accuracy'])}%, "
            f"accuracy {_pct(test['accuracy'])}% (`best/metrics.json`).",
            "",
        ]
    if trials:
        lines += [
            "## Trials",
            "",
            f"Every design was trained for the first {summary['trial_epochs']} epochs of its "
            f"schedule and scored on the clean meta split only, by its {label} (lower is "
            "better; a design fitted on the meta set was trained on one half of it and scored "
            "on the other, or with `design.cross_fit_swap` on each half, each image scored by "
            "the run that did not see it: `scored` counts the images). The standard error is "
            "that of the paired difference to the best design over the meta images both were "
            "scored on; the best designs (finalists) continued to the full epochs.",
            "",
            f"| trial | design | {label} | difference to best ± SE | scored | sample-epochs | |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in summary["trials"]:
            marks = [name for name in ("chosen", "best", "finalist") if row.get(name)]
            mark = ", ".join(marks)
            lines.append(
                f"| {row['trial']} | {row['name']} | {row['score']:.4f} | "
                f"{row['difference_to_best']:+.4f} ± {row['standard_error']:.4f} | "
                f"{row.get('scored_images', '')} | {row['sample_epochs'] or 0:.0f} | {mark} |"
            )
        lines += ["", "![trials](design_trials.png)", ""]
    if summary["contributions"]:
        lines += [
            "## What each component contributed",
            "",
            "From the study: the chosen design against the best trial without the component "
            f"(positive: the component lowered the {label}).",
            "",
            f"| component | best design without it | {label} gain |",
            "|---|---|---|",
        ]
        for row in summary["contributions"]:
            if row["without"] is None:
                lines.append(f"| {row['component']} | no trial without it | – |")
            else:
                lines.append(
                    f"| {row['component']} | #{row['trial_without']} {row['without']} | "
                    f"{row['score_gain']:+.4f} |"
                )
        lines.append("")
    if summary.get("leave_one_out"):
        test = summary.get("test") or {}
        lines += [
            "## Leave-one-out retrainings",
            "",
            "The chosen design retrained with the full epoch budget without each component.",
            "",
            f"| component left out | design | {label} gain of the component | "
            "test balanced acc. % without it (with it) |",
            "|---|---|---|---|",
        ]
        for row in summary["leave_one_out"]:
            lines.append(
                f"| {row['component']} | {row['without']} | {row['meta_score_gain']:+.4f} | "
                f"{_pct(row['test']['balanced_accuracy'])} "
                f"({_pct(test.get('balanced_accuracy'))}) |"
            )
        lines.append("")
    estimate = noise["estimate"]
    lines += ["## Estimated noise model", "", *_noise_model_source(noise, summary), ""]
    # The verdict of the estimate in use, or (the average has none) of each estimate averaged.
    second = (noise.get("second_look") or {}).get("estimate")
    verdicts = [
        (prefix, model["check"])
        for prefix, model in (
            [("", estimate)]
            if estimate.get("check")
            else [("The probe's estimate: ", noise["probe"]), ("The second look: ", second)]
        )
        if model and model.get("check")
    ]
    for prefix, check in verdicts:
        lines += [
            f"{prefix}**{check['status'].capitalize()}** "
            f"(shrinkage λ = {check['shrinkage']:.2f} towards no noise): {check['reason']}",
            "",
        ]
    # As in the study: transition designs are left out only when every estimate was rejected.
    if verdicts and all(check["status"] == "rejected" for _, check in verdicts):
        lines[-2] += " Transition designs were therefore not among the references."
    lines += [
        "| class | observed labels | estimated clean n̂ | estimated P(label kept) |"
        + (" true clean | true P(label kept) |" if noise.get("error") else ""),
        "|---|---|---|---|" + ("---|---|" if noise.get("error") else ""),
    ]
    diagonal = np.diag(np.asarray(estimate["transition"]))
    for c, name in enumerate(names):
        row = (
            f"| {name} | {estimate['observed_counts'][c]} | {estimate['clean_counts'][c]:.0f} | "
            f"{diagonal[c]:.2f} |"
        )
        if noise.get("error"):
            true_diag = noise["error"].get("true_diagonal")
            row += f" {noise['error']['true_counts'][c]:.0f} | "
            row += f"{true_diag[c]:.2f} |" if true_diag else "– |"
        lines.append(row)
    if noise.get("error"):
        error = noise["error"]
        lines += [
            "",
            f"Estimation error (simulated shift): mean row L1 of T̂ − T "
            f"{error['transition_row_l1_mean']:.3f} (max {error['transition_row_l1_max']:.3f}); "
            f"total variation between the estimated and the true clean prior "
            f"{error['prior_total_variation']:.3f} (the observed counts: "
            f"{error['observed_prior_total_variation']:.3f}).",
        ]
        for key, name in (("probe_error", "probe"), ("second_look_error", "second look")):
            if noise.get("source") == "average" and noise.get(key):
                lines[-1] += (
                    f" The {name}'s estimate alone: total variation "
                    f"{noise[key]['prior_total_variation']:.3f}, mean row L1 "
                    f"{noise[key]['transition_row_l1_mean']:.3f}."
                )
    lines += ["", "![noise model](noise_model.png)", ""]
    relabel = None
    if summary.get("retrained_data"):
        relabel = summary["retrained_data"].get("relabel")
    if relabel:
        lines += [
            "## Selection",
            "",
            f"The retrained design kept {relabel['kept']} of {relabel['pool_size']} samples "
            f"({relabel['relabelled']} relabelled, {relabel['dropped']} dropped).",
            "",
        ]
    cost = summary["cost"]
    lines += [
        "## Cost",
        "",
        "In sample-epochs (one sample through one training epoch; MW-Net and AutoBalance steps "
        "count their nominal extra cost) and in units of one training of the configured model "
        "on the whole pool for `train.epochs` epochs (the budget's unit).",
        "",
        "| stage | sample-epochs | CPU s |",
        "|---|---|---|",
        f"| probe | {cost.get('probe_sample_epochs', 0):.0f} | "
        f"{cost.get('probe_cpu_seconds', 0):.0f} |",
        f"| trials | {cost.get('trials_sample_epochs', 0):.0f} | – |",
        *(
            [
                f"| finalists to full epochs | {cost['finalists_sample_epochs']:.0f} | "
                f"{cost.get('finalists_cpu_seconds', 0):.0f} |"
            ]
            if "finalists_sample_epochs" in cost
            else []
        ),
        f"| retraining (a fixed design) / test evaluation | "
        f"{cost.get('retrain_sample_epochs', 0):.0f} | "
        f"{cost.get('retrain_cpu_seconds', 0):.0f} |",
        f"| **total** | {cost.get('total_sample_epochs', 0):.0f} "
        f"(**{cost.get('budget_used', 0):.2f}** trainings) | |",
        "",
    ]
    path = run_dir / REPORT_NAME
    write_text(path, "\n".join(lines) + "\n")
    return path


def _noise_model_source(noise: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    """Where the noise model in use comes from: the probe, or the average of the probe's and the
    second look's (and why)."""
    lines = [
        f"Estimated from the probe ({summary['probe_epochs']} epochs, logit adjustment) with the "
        f"`{noise['probe']['method']}` estimator (`noise_model.json`)."
    ]
    second = noise.get("second_look")
    if second:
        lines[0] += (
            f" Then estimated again from trial {second['trial']} ({second['name']}), the best "
            f"first-rung design that never fitted on the meta set "
            f"(`noise_model_second_look.json`; its meta score {second['meta_score']:.4f}, the "
            f"probe's {second['probe_meta_score']:.4f}). Neither estimate is reliably the "
            "closer to the truth, so the design uses their average "
            "(`noise_model_average.json`), which the tables below show."
        )
    return lines
