"""``autorobust design`` end to end on the bundled digits: stages, resume, report, CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from autorobust.cli import main
from autorobust.config import load_config
from autorobust.design import _finalists, _probe, _study
from autorobust.design._finalists import (
    ensemble_complexity,
    ensemble_run,
    ensemble_scores,
    ensemble_summary,
)
from autorobust.design._fits import design_fits, design_splits, meta_scores, train_until
from autorobust.design._probe import run_probe, take_second_look
from autorobust.design._refit import with_meta_in_pool
from autorobust.design._state import DesignRun
from autorobust.design._study import costliest_factors, finalist_trials
from autorobust.design.config import DesignConfig
from autorobust.design.pipeline import design_run_config, run_design
from autorobust.design.scoring import ENSEMBLE_KEY, ScoredDesign, choose_finalist
from autorobust.design.space import (
    AUTOBALANCE_DESIGN,
    LEADING_REFERENCE_DESIGNS,
    MWNET_DESIGN,
    REFERENCE_DESIGNS,
    ROLT_DESIGN,
    Design,
)
from autorobust.design.treatments import treatment
from autorobust.experiment import build_splits
from autorobust.methods.glc.noise_model import NoiseModel
from autorobust.train.trainer import load_checkpoint

SMALL = [
    "train.epochs=6",
    "train.batch_size=128",
    "model.options.width=8",
    "train.progress=false",
    "device=cpu",
    "design.losses=[cross_entropy,logit_adjustment]",
    "design.treatments=[none,transition,selection]",
    "design.max_trials=5",
]


def _config(run_dir: Path, *extra: str):
    return load_config("demo", [f"run_dir={run_dir}", *SMALL, *extra])


def test_design_runs_every_stage_and_reports_the_chosen_components(tmp_path: Path) -> None:
    outcome = run_design(_config(tmp_path / "d"))
    summary = json.loads((tmp_path / "d" / "design.json").read_text())
    # The probe's recipe and the references the budget allows after keeping the finalists'
    # continuation free.
    names = [row["name"] for row in summary["trials"]]
    assert len(names) >= 2
    # The kept single design is refitted on the pool and the meta set (the default) when what the
    # study and the finalists left of the budget pays for it; the report says which.
    if not summary["final"]["ensemble"] or not summary["final"]["ensemble"]["kept"]:
        refit = summary["refit"]
        spent = summary["cost"]["budget_used"] - (refit["cost"] if refit["refit_test"] else 0.0)
        assert refit["budget_left"] == pytest.approx(3.0 - spent)
        assert (refit["refit_test"] is not None) == (refit["cost"] <= refit["budget_left"])
        if refit["refit_test"] is None:
            assert outcome.retrained.run_dir.name == "best"
            assert refit["reason"] in outcome.report.read_text()
        else:
            assert outcome.retrained.run_dir.name == "refit"
            assert refit["refit_test"] == outcome.retrained.metrics["test"]
    assert sum(row["chosen"] for row in summary["trials"]) == 1
    assert "selection" in {Design.from_dict(row["design"]).treatment for row in summary["trials"]}
    report = outcome.report.read_text()
    chosen = Design.from_dict(outcome.chosen["design"])
    for component in chosen.components:
        assert component in report
    assert f"**{chosen.describe()}**" in report
    assert (tmp_path / "d" / "noise_model.png").is_file()
    assert (tmp_path / "d" / "design_trials.png").is_file()
    # In a simulated shift the noise model's error is measured and written with the test metrics.
    error = outcome.retrained.metrics["noise_model"]["error"]
    assert 0.0 <= error["prior_total_variation"] <= 1.0
    assert len(error["transition_row_l1"]) == 10
    assert 0.0 < outcome.retrained.metrics["test"]["balanced_accuracy"] <= 1.0
    # The noise model was checked against its bootstrap spread, and the report says the verdict.
    check = summary["noise_model"]["probe"]["check"]
    assert check["status"] in {"used", "shrunk", "rejected"} and 0.0 <= check["shrinkage"] <= 1.0
    assert check["reason"] in report and f"λ = {check['shrinkage']:.2f}" in report
    # The budget (3 trainings by default) holds, the probe's work included.
    assert 0.3 < summary["cost"]["budget_used"] <= 3.0


def test_design_resumes_after_an_interruption_to_the_same_result(tmp_path, monkeypatch) -> None:
    full = run_design(_config(tmp_path / "full"))

    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # Ctrl-C during the third run trained (the probe is the first)
            raise KeyboardInterrupt
        return train_until(*args, **kwargs)

    # Every stage that trains a paused run (the probe, the trials, the finalists).
    stages = (_probe, _study, _finalists)
    with monkeypatch.context() as patch:
        for stage in stages:
            patch.setattr(stage, "train_until", interrupted)
        with pytest.raises(KeyboardInterrupt):
            run_design(_config(tmp_path / "cut"))
    resumed = run_design(_config(tmp_path / "cut"))

    assert resumed.chosen["name"] == full.chosen["name"]
    a = load_checkpoint(tmp_path / "full" / "best" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "cut" / "best" / "checkpoint.pt")
    for name, tensor in a["best_model"].items():
        assert torch.equal(tensor, b["best_model"][name]), name
    scores = lambda run: [  # noqa: E731
        (r["name"], r["score"])
        for r in json.loads((tmp_path / run / "design.json").read_text())["trials"]
    ]
    assert scores("full") == scores("cut")


def test_each_design_becomes_the_config_that_trains_it(tmp_path: Path) -> None:
    config = _config(tmp_path)
    splits = build_splits(config)
    noise_file, relabel_file = tmp_path / "noise_model.json", tmp_path / "sel.npz"
    plain, selection, transition = REFERENCE_DESIGNS[0], REFERENCE_DESIGNS[3], REFERENCE_DESIGNS[-1]
    assert (selection.detector, transition.treatment) == ("posterior", "transition")
    built = design_run_config(config, plain, epochs=2, run_dir=tmp_path / "a")
    assert (built.method, built.loss.name, built.train.epochs) == ("erm", "logit_adjustment", 2)
    built = design_run_config(
        config, selection, epochs=2, run_dir=tmp_path / "b", relabel_file=relabel_file
    )
    assert built.data.relabel_file == str(relabel_file)
    semi = dataclasses.replace(selection, pseudo_label=True)
    built = design_run_config(
        config, semi, epochs=2, run_dir=tmp_path / "s", relabel_file=relabel_file
    )
    assert built.method == "pseudo_label" and semi.components[-2] == "pseudo_label"
    built = design_run_config(
        config, transition, epochs=2, run_dir=tmp_path / "c", noise_model_file=noise_file
    )
    assert built.loss.name == "forward_corrected"
    assert built.loss.options == {"noise_model_file": str(noise_file), "tau": 1.0}
    observed = splits.train_class_counts
    NoiseModel(
        transition=np.full((10, 10), 0.02) + 0.8 * np.eye(10),
        clean_counts=observed.astype(float),
        observed_counts=observed,
    ).save(noise_file)
    learned = Design(treatment="transition", loss="autobalance", tau=1.0)
    built = design_run_config(
        config, learned, epochs=2, run_dir=tmp_path / "e", noise_model_file=noise_file
    )
    assert built.method == "autobalance" and built.bilevel.init == "logit_adjustment"
    assert np.allclose(built.bilevel.transition, NoiseModel.load(noise_file).transition)
    assert built.bilevel.init_prior_counts == observed.tolist()
    mwnet = Design(treatment="mwnet", loss="cross_entropy", tau=0.0, mwnet_class_aware=True,
                   mwnet_lr=1e-3)  # fmt: skip
    built = design_run_config(config, mwnet, epochs=2, run_dir=tmp_path / "d")
    assert built.method == "reweight" and built.reweight.class_embedding == 8
    assert splits.num_classes == 10


def test_cli_design_prints_the_choice_and_refuses_a_bad_budget(tmp_path: Path, capsys) -> None:
    args = ["design", "demo", "--run-dir", str(tmp_path / "cli"), "--budget", "2"]
    for item in SMALL:
        args += ["--set", item]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "chosen design: " in out and "design.md" in out
    assert main([*args[:3], str(tmp_path / "bad"), "--budget", "0.5"]) == 2
    assert "design.budget" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_a_fixed_design_with_leave_one_out_retrainings(tmp_path: Path) -> None:
    fixed = REFERENCE_DESIGNS[3]  # selection by the posterior + logit adjustment
    assert (fixed.detector, fixed.relabel) == ("posterior", False)
    outcome = run_design(_config(tmp_path / "f", "design.leave_one_out=true"), fixed=fixed)
    assert outcome.chosen["name"] == fixed.describe()
    summary = json.loads((tmp_path / "f" / "design.json").read_text())
    left_out = {row["component"]: row for row in summary["leave_one_out"]}
    assert set(left_out) == {"selection", "logit_adjustment"}
    assert left_out["selection"]["without"] == "logit_adjustment(tau=1.00)"
    assert (tmp_path / "f" / "leave_one_out" / "selection" / "metrics.json").is_file()
    assert "## Leave-one-out retrainings" in outcome.report.read_text()
    assert not (tmp_path / "f" / "study.db").exists()  # a fixed design runs no study


def test_leave_one_out_after_a_kept_ensemble_compares_with_the_kept_finalist(
    tmp_path: Path, monkeypatch
) -> None:
    """Once the finalists' ensemble is kept, their trial checkpoints are gone (moved to
    best/members): the leave-one-out retrainings are compared with the kept finalist's score at
    train.epochs, as the finalists were compared (it used to fail reading a dropped checkpoint)."""

    def always_kept(finalists, ensemble, labels, num_classes, *, one_standard_error):
        choice = choose_finalist(finalists, ensemble, labels, num_classes)
        assert ensemble is not None
        return dataclasses.replace(choice, ensemble_kept=True)  # the case under test

    monkeypatch.setattr(_finalists, "choose_finalist", always_kept)
    outcome = run_design(_config(tmp_path / "e", "design.leave_one_out=true", "train.epochs=4"))
    summary = json.loads((tmp_path / "e" / "design.json").read_text())
    assert summary["final"]["ensemble"]["kept"] and outcome.final.startswith("ensemble(")
    assert not list((tmp_path / "e" / "trials").glob("**/checkpoint.pt"))
    kept = [c for c in summary["final"]["candidates"] if c["kept"]]
    assert len(kept) == 1 and kept[0]["name"] == summary["final_name"]
    rows = summary["leave_one_out"]
    assert [r["component"] for r in rows] == Design.from_dict(summary["final_design"]).components
    for row in rows:
        assert row["meta_score_gain"] == pytest.approx(row["meta_score"] - kept[0]["score"])


def test_a_selection_trains_on_what_its_config_would_build(tmp_path: Path) -> None:
    """The design applies a selection to the splits in memory; a user training the same config
    from the command line builds them from the file: both must be the same data."""
    config = _config(tmp_path / "s")
    state = DesignRun(config, build_splits(config), tmp_path / "s", 2, 2)
    run_probe(state)
    design = dataclasses.replace(REFERENCE_DESIGNS[5], pseudo_label=True)
    assert design.relabel and design.detector == "posterior"
    in_memory, relabel_file = design_splits(state, design)
    built = build_splits(
        design_run_config(config, design, epochs=2, run_dir=tmp_path / "x",
                          relabel_file=relabel_file)
    )  # fmt: skip
    assert np.array_equal(in_memory.train.labels, built.train.labels)
    assert np.array_equal(in_memory.train.source_index, built.train.source_index)
    assert np.array_equal(in_memory.train_class_counts, built.train_class_counts)
    assert len(in_memory.rejected.images) == len(built.rejected.images) > 0
    assert in_memory.relabel == built.relabel
    # The unlabeled view too: drawn from the relabelled pool, so its positions are in that pool.
    assert np.array_equal(in_memory.unlabeled_index, built.unlabeled_index)
    assert np.array_equal(in_memory.unlabeled, built.unlabeled)


def test_finalists_continue_to_full_epochs_and_the_kept_one_becomes_best(tmp_path: Path) -> None:
    config = _config(
        tmp_path / "r",
        "design.treatments=[none,selection]",
        "design.reference_final=true",
        "design.finalists_across_treatments=true",
        "design.max_trials=3",
        "design.budget=4",
        "design.ensemble=false",
        "design.refit=false",
    )
    outcome = run_design(config)
    summary = json.loads((tmp_path / "r" / "design.json").read_text())
    final = summary["final"]
    names = [row["name"] for row in final["candidates"]]
    # The reference is a finalist whatever its first-rung score; with it, the best trial of
    # another treatment (a selection).
    assert len(names) == 2 and REFERENCE_DESIGNS[0].describe() in names
    assert [c["design"]["treatment"] for c in summary["trials"] if c["finalist"]].count(
        "selection"
    ) == 1
    finalists = [row for row in summary["trials"] if row["finalist"]]
    assert sorted(row["name"] for row in finalists) == sorted(names)
    assert sum(row["kept"] for row in final["candidates"]) == 1
    kept = next(row for row in final["candidates"] if row["kept"])
    assert kept["name"] == outcome.chosen["name"] == outcome.final == summary["final_name"]
    assert [row["trial"] for row in summary["trials"] if row["chosen"]] == [kept["trial"]]
    # The kept run went on to train.epochs; best/ holds it, measured on the test split.
    best = load_checkpoint(tmp_path / "r" / "best" / "checkpoint.pt")
    assert best["epoch"] == 6
    metrics = json.loads((tmp_path / "r" / "best" / "metrics.json").read_text())
    assert metrics["test"] == outcome.retrained.metrics["test"]
    # Every finalist's continuation is paid: 6 - 2 epochs of its pool, within the budget.
    pool = len(build_splits(config).train)
    assert summary["cost"]["finalists_sample_epochs"] >= pool * 4  # the reference's alone
    assert summary["cost"]["budget_used"] <= 4.0
    # Nothing but best/ and the probe keeps a checkpoint once the design is finished.
    left = sorted(p.relative_to(tmp_path / "r") for p in (tmp_path / "r").rglob("checkpoint.pt"))
    assert left == [Path("best/checkpoint.pt"), Path("probe/checkpoint.pt")]
    report = outcome.report.read_text()
    assert "### Finalists at full epochs" in report
    assert "the reference design and the best design of each noise treatment" in report
    assert summary["score"] == "calibrated_log_loss"
    assert "calibrated balanced meta log-loss" in report


def test_the_finalists_are_the_best_of_each_treatment_then_the_best_of_the_rest() -> None:
    posterior = LEADING_REFERENCE_DESIGNS[3]
    assert posterior.treatment == "selection" and posterior.detector == "posterior"
    scored = [  # (first-rung score, design): two selections lead, as they do at a third
        (0.35, ROLT_DESIGN),  # of the epochs on Fashion-MNIST
        (0.45, posterior),
        (0.61, MWNET_DESIGN),
        (0.72, AUTOBALANCE_DESIGN),
        (0.83, REFERENCE_DESIGNS[0]),
    ]
    study = optuna.create_study()
    for value, design in scored:
        study.add_trial(
            optuna.trial.create_trial(value=value, user_attrs={"design": design.to_dict()})
        )
    done = study.get_trials()

    def names(**settings) -> list[str]:
        chosen = finalist_trials(DesignConfig(**settings), done)
        return [Design.from_dict(t.user_attrs["design"]).describe() for t in chosen]

    # By default the two best by score: two selections.
    assert names() == [ROLT_DESIGN.describe(), posterior.describe()]
    # Across treatments: the best selection, then the best of another treatment (MW-Net).
    across = {"finalists_across_treatments": True}
    assert names(**across) == [ROLT_DESIGN.describe(), MWNET_DESIGN.describe()]
    # Three treatments among four finalists: the fourth is the best of the rest.
    assert names(**across, finalists=4) == [
        d.describe() for d in (ROLT_DESIGN, MWNET_DESIGN, AUTOBALANCE_DESIGN, posterior)
    ]
    # The reference first, then the best of a treatment other than its own (none).
    assert names(**across, reference_final=True) == [
        REFERENCE_DESIGNS[0].describe(), ROLT_DESIGN.describe()
    ]  # fmt: skip
    assert names(reference_final=True) == [
        REFERENCE_DESIGNS[0].describe(), ROLT_DESIGN.describe()
    ]  # fmt: skip
    assert names(**across, reference_final=True, finalists=1) == [REFERENCE_DESIGNS[0].describe()]


def test_a_paused_run_continues_to_the_weights_of_an_uninterrupted_one(tmp_path: Path) -> None:
    config = _config(tmp_path / "a")
    splits = build_splits(config)
    whole = design_run_config(config, REFERENCE_DESIGNS[0], epochs=4, run_dir=tmp_path / "a")
    paused = design_run_config(config, REFERENCE_DESIGNS[0], epochs=4, run_dir=tmp_path / "b")
    train_until(whole, splits, 4)
    assert train_until(paused, splits, 2) is None
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["epoch"] == 2
    assert train_until(paused, splits, 1) is None  # already there: trains nothing
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["epoch"] == 2
    result = train_until(paused, splits, 4)
    assert result is not None and result.metrics["run"]["epochs"] == 4
    a = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name


def test_a_design_fitted_on_the_meta_set_is_cross_fitted(tmp_path: Path) -> None:
    config = _config(tmp_path / "x")
    state = DesignRun(config, build_splits(config), tmp_path / "x", 2, 2)
    run_probe(state)
    meta = state.splits.meta
    # By default one run, fitted on one stratified half and scored on the other.
    (half,) = design_fits(state, AUTOBALANCE_DESIGN, tmp_path / "x" / "h")
    assert half.run_dir.name == "meta-half-0" and half.scored.sum() == len(meta) // 2
    # With the swap, a second run is fitted on the second half and scored on the first.
    state.config = config.model_copy(
        update={"design": config.design.model_copy(update={"cross_fit_swap": True})}
    )
    fits = design_fits(state, AUTOBALANCE_DESIGN, tmp_path / "x" / "t")
    assert [f.run_dir.name for f in fits] == ["meta-half-0", "meta-half-1"]
    assert np.array_equal(fits[0].scored, half.scored)
    first, second = (set(f.splits.meta_index.tolist()) for f in fits)
    assert not first & second and first | second == set(state.splits.meta_index.tolist())
    for fit in fits:
        # Fitted on its half (every class), scored on exactly the other half.
        assert np.bincount(fit.splits.meta.labels, minlength=10).tolist() == [5] * 10
        fitted = np.isin(state.splits.meta_index, fit.splits.meta_index)
        assert np.array_equal(fit.scored, ~fitted)
        assert fit.config.bilevel.upper_data == "meta"
    for fit in fits:
        train_until(fit.config, fit.splits, 1)
    scores = meta_scores(state, fits)
    assert scores.shape == (len(meta),) and np.isfinite(scores).all()
    alone = meta_scores(state, fits[:1])
    assert np.isnan(alone[~fits[0].scored]).all() and np.isfinite(alone[fits[0].scored]).all()
    assert np.array_equal(alone[fits[0].scored], scores[fits[0].scored])
    # A design that fits nothing on the meta set trains once and is scored on every image.
    (plain,) = design_fits(state, ROLT_DESIGN, tmp_path / "x" / "r")
    assert plain.scored.all() and len(plain.splits.meta) == len(meta)
    # Without cross-fitting, AutoBalance fits on the meta images that score it.
    state.config = config.model_copy(
        update={"design": config.design.model_copy(update={"cross_fit": False})}
    )
    (whole,) = design_fits(state, AUTOBALANCE_DESIGN, tmp_path / "x" / "w")
    assert whole.scored.all()


def test_refit_trains_the_chosen_design_on_the_pool_and_the_meta_set(tmp_path: Path) -> None:
    config = _config(
        tmp_path / "f",
        "design.treatments=[none]",
        "design.losses=[logit_adjustment]",
        "design.max_trials=1",
        "design.refit=true",
    )
    splits = build_splits(config)
    merged = with_meta_in_pool(splits)
    pool, meta = splits.train, splits.meta
    assert len(merged.train) == len(pool) + len(meta)
    assert np.array_equal(merged.train.images[len(pool) :], meta.images)
    assert np.array_equal(merged.train.labels[len(pool) :], meta.labels)
    assert not merged.train.noise_mask[len(pool) :].any()
    assert merged.meta is splits.meta  # still the validation split
    outcome = run_design(config)
    summary = json.loads((tmp_path / "f" / "design.json").read_text())
    refit = json.loads((tmp_path / "f" / "refit" / "metrics.json").read_text())
    assert refit["data"]["train_size"] == len(pool) + len(meta)
    assert outcome.retrained.run_dir == tmp_path / "f" / "refit"
    assert summary["refit"]["refit_test"] == refit["test"] == outcome.retrained.metrics["test"]
    best = json.loads((tmp_path / "f" / "best" / "metrics.json").read_text())
    assert summary["refit"]["best_test"] == best["test"]
    # It continued the kept run's first-rung checkpoint (epochs 0-1, without the meta images)
    # to the 6 epochs of the schedule, the meta images in the pool from epoch 2 on.
    assert summary["refit"]["start_epoch"] == summary["trial_epochs"] == 2
    assert summary["cost"]["refit_sample_epochs"] == (len(pool) + len(meta)) * (6 - 2)
    history = load_checkpoint(tmp_path / "f" / "refit" / "checkpoint.pt")["history"]
    trial = load_checkpoint(tmp_path / "f" / "best" / "checkpoint.pt")["history"]
    assert history[:2] == trial[:2] and history[2:] != trial[2:] and len(history) == 6
    assert not list((tmp_path / "f" / "trials").rglob("*.pt"))  # spent once the refit is done
    assert summary["cost"]["budget_used"] <= 3.0


def test_the_finalists_ensemble_is_scored_fairly_and_loads_as_one_model(tmp_path: Path) -> None:
    from autorobust import LoadedEnsemble, load_model
    from autorobust.train.metrics import classification_metrics

    config = _config(tmp_path / "e")
    splits = build_splits(config)
    state = DesignRun(config, splits, tmp_path / "e", 2, 2)
    run_probe(state)
    finalists = [
        (design, design_fits(state, design, tmp_path / "e" / name)[0])
        for design, name in ((REFERENCE_DESIGNS[0], "a"), (AUTOBALANCE_DESIGN, "b"))
    ]
    for _, fit in finalists:
        train_until(fit.config, fit.splits, 6)
    scores = ensemble_scores(state, [fit for _, fit in finalists])
    # Scored only where every member may be: the cross-fitted AutoBalance run's other half.
    assert np.isfinite(scores).sum() == int(finalists[1][1].scored.sum()) == 50
    assert np.array_equal(np.isfinite(scores), finalists[1][1].scored)
    ensemble = ScoredDesign(ENSEMBLE_KEY, ensemble_complexity([d for d, _ in finalists]), scores)
    assert ensemble.complexity > max(d.complexity for d, _ in finalists)
    first = ScoredDesign(0, finalists[0][0].complexity, meta_scores(state, [finalists[0][1]]))
    row = ensemble_summary(ensemble, first, finalists, splits.meta.labels, 10, kept=False)
    assert row["difference"] == pytest.approx(row["score"] - row["best_finalist_score"])
    assert row["scored_images"] == 50 and row["standard_error"] > 0.0
    assert row["members"] == [d.describe() for d, _ in finalists] and row["kept"] is False
    result = ensemble_run(state, [fit for _, fit in finalists])
    best = tmp_path / "e" / "best"
    loaded = load_model(best)
    assert isinstance(loaded, LoadedEnsemble) and len(loaded.members) == 2
    probabilities = loaded.predict_proba(splits.test.images)
    members = [m.predict_proba(splits.test.images) for m in loaded.members]
    assert np.allclose(probabilities, np.mean(members, axis=0))
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    again = classification_metrics(splits.test.labels, probabilities.argmax(1), 10)
    assert again["balanced_accuracy"] == pytest.approx(result.metrics["test"]["balanced_accuracy"])
    assert json.loads((best / "ensemble.json").read_text())["members"] == ["members/0", "members/1"]
    # Each member is a finished run of its own, measured on the test split there.
    for index in (0, 1):
        member = json.loads((best / "members" / str(index) / "metrics.json").read_text())
        assert member["test"] == result.metrics["members"][index]
    # Exported as one file whose probabilities export_model checks against the ensemble's.
    from autorobust import export_model

    path = export_model(best, "pt2", tmp_path / "ensemble.pt2")
    described = json.loads(path.with_name(path.name + ".json").read_text())
    assert [m["run_dir"] for m in described["members"]] == [str(m.run_dir) for m in loaded.members]
    assert described["check"]["max_abs_difference"] <= 1e-4


def test_a_bad_genotype_file_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    from autorobust.errors import AutorobustError

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"normal": [["no_such_op", 0]] * 8, "reduce": []}))
    config = _config(tmp_path / "g", f"design.architectures=[fixed, {bad}]")
    with pytest.raises(AutorobustError, match=r"^design\.architectures: .*bad\.json: "):
        run_design(config)
    assert not (tmp_path / "g").exists()


def test_the_leading_references_come_before_the_refit_in_the_budget(tmp_path: Path) -> None:
    """At the default budget and space, AutoBalance (a leading reference, cross-fitted on one
    half of the meta set) is trained: reserving the refit, or swapping the halves, left it no
    room (only logit adjustment and the RoLT-style selection were tried then)."""
    config = load_config(
        "demo",
        [f"run_dir={tmp_path / 'p'}", "train.epochs=6", "train.batch_size=128",
         "model.options.width=8", "train.progress=false", "device=cpu"],
    )  # fmt: skip
    run_design(config, retrain=False)
    summary = json.loads((tmp_path / "p" / "design.json").read_text())
    rows = sorted(summary["trials"], key=lambda r: r["trial"])
    tried = [Design.from_dict(row["design"]) for row in rows]
    leading = [d for d in LEADING_REFERENCE_DESIGNS if d in tried]
    assert tried[: len(leading)] == leading  # in their order, before anything else
    assert AUTOBALANCE_DESIGN in tried
    autobalance = next(r for r in summary["trials"] if r["name"] == AUTOBALANCE_DESIGN.describe())
    assert autobalance["scored_images"] == len(build_splits(config).meta) // 2
    assert summary["cost"]["budget_used"] <= 3.0


def test_the_budget_counts_a_proposal_at_the_costliest_design_of_the_space() -> None:
    from autorobust.design.config import DesignConfig

    # A selection with pseudo-labels costs 2.3 per sample-epoch; AutoBalance 1.3, twice at the
    # first rung when the cross-fitting halves are swapped.
    assert costliest_factors(DesignConfig()) == pytest.approx((2.3, 2.3))
    swapped = DesignConfig(cross_fit_swap=True)
    assert costliest_factors(swapped) == pytest.approx((2.6, 2.3))
    assert costliest_factors(DesignConfig(cross_fit=False)) == pytest.approx((2.3, 2.3))
    plain = DesignConfig(treatments=["none", "selection"], pseudo_label=[False],
                         losses=["logit_adjustment"])  # fmt: skip
    assert costliest_factors(plain) == (1.0, 1.0)
    # Pseudo-labels bring their own training method: never with AutoBalance's bilevel trainer.
    only_autobalance = DesignConfig(losses=["autobalance"], pseudo_label=[False, True])
    assert costliest_factors(only_autobalance) == pytest.approx((1.3, 1.3))
    selection, mwnet = treatment("selection"), treatment("mwnet")
    assert selection.pseudo_label_choices(only_autobalance, "autobalance") == [False]
    assert selection.pseudo_label_choices(only_autobalance, "logit_adjustment") == [False, True]
    assert mwnet.pseudo_label_choices(only_autobalance, "logit_adjustment") == [False]


def test_a_killed_trial_is_resumed_by_its_retry_not_trained_again(tmp_path: Path) -> None:
    """A worker killed (SIGKILL-like: no cleanup, no heartbeat) during the second reference
    design: the rerun resumes that trial in its folder, and no design is trained twice."""
    import subprocess
    import sys
    import textwrap

    overrides = [f"run_dir={tmp_path / 'k'}", *SMALL, "search.heartbeat_interval=1"]
    child = textwrap.dedent(
        f"""
        import os
        import autorobust.design.pipeline as pipeline
        from autorobust.design import _finalists, _probe, _study
        from autorobust.design._fits import train_until
        from autorobust.config import load_config

        calls = []

        def dies_in_the_second_trial(config, splits, until, **kwargs):
            calls.append(config.run_dir)
            if len(calls) == 3 and until == 2:  # the probe, trial 0, then trial 1 half-way
                train_until(config, splits, 1)  # one epoch checkpointed, then the kill
                os._exit(9)
            return train_until(config, splits, until, **kwargs)

        for stage in (_probe, _study, _finalists):
            stage.train_until = dies_in_the_second_trial
        pipeline.run_design(load_config("demo", {overrides!r}))
        """
    )
    killed = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True)
    assert killed.returncode == 9, killed.stderr[-2000:]
    dead = tmp_path / "k" / "trials" / "trial-0001"
    assert load_checkpoint(dead / "checkpoint.pt")["epoch"] == 1
    run_design(load_config("demo", overrides))
    summary = json.loads((tmp_path / "k" / "design.json").read_text())
    names = [row["name"] for row in summary["trials"]]
    assert len(names) == len(set(names))  # no design trained twice
    import optuna

    study = optuna.load_study(
        study_name="design", storage=f"sqlite:///{tmp_path / 'k' / 'study.db'}"
    )
    retried = [t for t in study.trials if t.user_attrs.get("resumed_from_trial") == 1]
    assert len(retried) == 1 and retried[0].state.name == "COMPLETE"
    assert not dead.exists()  # its folder was taken over


def test_the_noise_model_is_estimated_again_from_the_best_trial_and_the_two_are_averaged(
    tmp_path: Path,
) -> None:
    from autorobust.data.tensors import images_to_tensor
    from autorobust.design.scoring import per_image_score, scored_balanced_mean
    from autorobust.experiment import load_best_model
    from autorobust.methods.glc.noise_model import estimate_noise_model
    from autorobust.train.trainer import predict

    # A probe of one epoch, trials of two.
    config = _config(
        tmp_path / "d", "design.budget=6", "design.probe_epochs=1", "design.trial_epochs=2"
    )
    run_design(config, retrain=False)  # the trials stay at their first rung
    summary = json.loads((tmp_path / "d" / "design.json").read_text())
    trials = {row["trial"]: row for row in summary["trials"]}
    second = summary["noise_model"]["second_look"]
    # Its source: the best first-rung trial among the designs that neither fit on the meta set
    # nor read the noise model.
    candidates = [
        row for row in trials.values()
        if not Design.from_dict(row["design"]).fits_meta
        and row["design"]["treatment"] != "transition"
    ]  # fmt: skip
    best = min(candidates, key=lambda row: (row["score"], row["trial"]))
    assert second["trial"] == best["trial"] and second["name"] == best["name"]
    # The estimate is the confusion estimator on that trial's logits, computed explicitly here.
    splits = build_splits(config)
    design = Design.from_dict(best["design"])
    trial_config = design_run_config(
        config, design, epochs=config.train.epochs,
        run_dir=tmp_path / "d" / "trials" / f"trial-{best['trial']:04d}",
        noise_model_file=tmp_path / "d" / "noise_model.json",
        relabel_file=DesignRun(config, splits, tmp_path / "d", 1, 2).selection_file(design)
        if design.treatment == "selection" else None,
    )  # fmt: skip
    trial_splits = build_splits(trial_config)
    model, normalize, _ = load_best_model(trial_config, trial_splits)
    logits = lambda images: predict(model, images_to_tensor(images, "cpu"), normalize).numpy()  # noqa: E731
    meta_logits = logits(splits.meta.images)
    expected = estimate_noise_model(
        observed_labels=splits.train.labels, num_classes=10, method="confusion",
        meta_logits=meta_logits, meta_labels=splits.meta.labels,
        pool_logits=logits(splits.train.images), probe_tau=design.tau, check=True,
        seed=config.seed,
    )  # fmt: skip
    saved = NoiseModel.load(tmp_path / "d" / "noise_model_second_look.json")
    np.testing.assert_allclose(saved.clean_counts, expected.clean_counts)
    np.testing.assert_allclose(saved.transition, expected.transition)
    assert second["meta_score"] == pytest.approx(
        scored_balanced_mean(
            per_image_score(meta_logits, splits.meta.labels, 10, config.design.score),
            splits.meta.labels, 10,
        )
    )  # fmt: skip
    # From then on the design uses the average of the two estimates: their joint counts
    # averaged, computed here explicitly; a transition design trained after it reads it.
    probe = NoiseModel.load(tmp_path / "d" / "noise_model.json")
    joint = (
        probe.clean_counts[:, None] * probe.transition
        + saved.clean_counts[:, None] * saved.transition
    ) / 2
    in_use = "noise_model_average.json"
    average = NoiseModel.load(tmp_path / "d" / in_use)
    np.testing.assert_allclose(average.clean_counts, joint.sum(axis=1))
    np.testing.assert_allclose(average.transition, joint / joint.sum(axis=1, keepdims=True))
    assert summary["noise_model"]["source"] == "average"
    assert summary["noise_model"]["estimate"]["clean_counts"] == pytest.approx(
        average.clean_counts.tolist()
    )
    # Its prior is no further from the truth than the two estimates' mean distance.
    error = summary["noise_model"]
    mean = (
        error["probe_error"]["prior_total_variation"]
        + error["second_look_error"]["prior_total_variation"]
    ) / 2
    assert error["error"]["prior_total_variation"] <= mean + 1e-12
    transition = [r for r in trials.values() if r["design"]["treatment"] == "transition"]
    assert transition and all(r["trial"] > second["trial"] for r in transition)
    for row in transition:
        written = load_config(
            tmp_path / "d" / "trials" / f"trial-{row['trial']:04d}" / "config.yaml"
        )
        assert Path(written.loss.options["noise_model_file"]).name == in_use
    report = (tmp_path / "d" / "design.md").read_text()
    assert f"estimated again from trial {second['trial']}" in report
    # Each averaged estimate's own check verdict is in the report.
    for name, model in (("The probe's estimate", probe), ("The second look", saved)):
        assert model.check is not None
        assert f"{name}: **{model.check.status.capitalize()}**" in report
        assert model.check.reason in report
    # A resumed run reads it back from its file, trials or not.
    state = DesignRun(config, splits, tmp_path / "d", 1, 2)
    state.noise_model = state.probe_noise_model = NoiseModel.load(
        tmp_path / "d" / "noise_model.json"
    )
    assert take_second_look(state, [])
    assert state.noise_model_file.name == in_use
    np.testing.assert_array_equal(state.noise_model.clean_counts, average.clean_counts)


@pytest.mark.parametrize(
    "design",
    [MWNET_DESIGN, ROLT_DESIGN, AUTOBALANCE_DESIGN, Design(treatment="transition", tau=1.0)],
    ids=["mwnet", "rolt", "autobalance", "transition"],
)
def test_each_treatment_trains_a_residual_network_that_loads_and_predicts(
    tmp_path: Path, design: Design
) -> None:
    """The reference protocol's model is a plain CNN; the held-back shifts use others. MW-Net's
    virtual step, the prototypes' features and AutoBalance's bilevel step run on a ResNet too,
    and the design's model loads outside the tool."""
    from autorobust import load_model

    config = _config(tmp_path / "r", "model.name=resnet20", "model.options.width=4",
                     "train.epochs=3", "design.refit=false")  # fmt: skip
    outcome = run_design(config, fixed=design)
    assert outcome.chosen["name"] == design.describe()
    written = load_config(outcome.retrained.run_dir / "config.yaml")
    assert written.model.name == "resnet20"
    assert 0.0 < outcome.retrained.metrics["test"]["balanced_accuracy"] <= 1.0
    splits = build_splits(config)
    loaded = load_model(outcome.retrained.run_dir)
    probabilities = loaded.predict_proba(splits.test.images[:7])
    assert probabilities.shape == (7, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-9)
