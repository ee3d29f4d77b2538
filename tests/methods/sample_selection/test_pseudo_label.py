"""``method: pseudo_label``: the contract of every training method, the loss against its formula
by hand, the threshold, ERM when nothing is rejected, and the refusals."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from autorobust.config import PseudoLabelConfig, TrainConfig, load_config
from autorobust.data.relabel import write_relabel_file
from autorobust.data.tensors import Normalization
from autorobust.errors import ConfigError
from autorobust.experiment import build_splits, train_run
from autorobust.losses import create_loss
from autorobust.losses.cross_entropy import CrossEntropyLoss
from autorobust.methods.sample_selection.pseudo_label import (
    PseudoLabelTrainer,
    build_pseudo_label_trainer,
    pseudo_label_loss,
    pseudo_labels,
)
from autorobust.testing import TrainingMethodTests
from autorobust.train.trainer import CHECKPOINT_NAME, load_checkpoint

SMALL = (
    "model.options.width=8",
    "train.threads=1",
    "loss.name=logit_adjustment",
    "method=pseudo_label",
    # A 3-epoch digits model is far from confident: a low threshold, so pseudo-labels do occur.
    "pseudo_label.threshold=0.2",
)


def _relabel_file(path: Path, drop_fraction: float = 0.3) -> Path:
    """Drops every noisy label of the digits demo pool and, seeded, a fraction of the others."""
    pool = build_splits(load_config("demo", ["device=cpu"])).train
    labels = np.where(pool.noise_mask, -1, pool.labels)
    labels[np.random.default_rng(0).random(len(labels)) < drop_fraction] = -1
    write_relabel_file(path, labels=labels, source_index=pool.source_index)
    return path


class TestPseudoLabel(TrainingMethodTests):
    """Exact resume, determinism and foreign checkpoints, with a linear ramp-up of lambda and the
    loss rebuilt every epoch with the pseudo-labels' counts (the default prior)."""

    config_name = "demo"
    overrides = (*SMALL, "pseudo_label.rampup_epochs=1")

    @pytest.fixture(scope="class")
    @classmethod
    def method_config(cls, tmp_path_factory):
        path = _relabel_file(tmp_path_factory.mktemp("relabel") / "r.npz")
        return load_config(
            cls.config_name,
            [
                *cls.overrides,
                f"data.relabel_file={path}",
                f"train.epochs={cls.epochs}",
                "train.progress=false",
                "device=cpu",
            ],
        )

    def test_pseudo_labels_are_trained_on_and_reported(self, method_config, tmp_path) -> None:
        splits = build_splits(method_config)
        result = self._run(method_config, splits, tmp_path / "run")
        method = result.metrics["method"]
        assert method["rejected"] == len(splits.rejected) > 0
        assert len(method["per_epoch"]) == self.epochs
        labelled = 0
        for epoch in method["per_epoch"]:
            # Every step draws one batch-size worth of rejected images (mu = 1).
            assert epoch["drawn"] == len(splits.train)
            fraction = epoch["pseudo_labelled_fraction"]
            assert 0.0 <= fraction <= 1.0
            count = round(fraction * epoch["drawn"])
            assert sum(epoch["pseudo_label_class_counts"]) == count
            labelled += count
            if count:
                assert 0.0 <= epoch["pseudo_label_accuracy"] <= 1.0
        assert labelled > 0, "the test's threshold let no pseudo-label through"
        # The last epoch's loss counted the labels and the previous epoch's pseudo-labels, at
        # full weight after the one-epoch ramp-up (lambda = 1, mu = 1).
        last = method["per_epoch"][-2]["pseudo_label_class_counts"]
        assert sum(last) > 0
        expected = splits.train_class_counts + np.asarray(last)
        assert method["last_epoch_prior_counts"] == expected.tolist()


class TestPseudoLabelLabelsPrior(TrainingMethodTests):
    """The same contract with the labels' counts only and two rejected images per labelled one."""

    config_name = "demo"
    overrides = (*SMALL, "pseudo_label.prior=labels", "pseudo_label.mu=2")
    method_config = TestPseudoLabel.method_config

    def test_twice_the_images_are_drawn_and_the_prior_is_fixed(self, method_config, tmp_path):
        splits = build_splits(method_config)
        method = self._run(method_config, splits, tmp_path / "run").metrics["method"]
        assert [e["drawn"] for e in method["per_epoch"]] == [2 * len(splits.train)] * self.epochs
        assert "last_epoch_prior_counts" not in method


# ---------------------------------------------------------------- the loss, by hand


class _Linear(nn.Module):
    """Logits = W vec(x) + b: no batch norm, no dropout, so eval and train mode agree."""

    num_classes = 3

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


COUNTS = np.array([5, 2, 1])  # the labels trained on; logit adjustment uses their prior


def _la_by_hand(logits: torch.Tensor, labels: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Per-sample -log softmax(z + tau log pi)_y, pi = COUNTS / sum (Menon et al. 2021)."""
    prior = torch.tensor(COUNTS / COUNTS.sum(), dtype=torch.float32)
    adjusted = logits + tau * torch.log(prior)
    return -(adjusted.gather(1, labels[:, None]).squeeze(1) - torch.logsumexp(adjusted, dim=1))


def _hand_made(
    threshold_rank: int,
    *,
    mu: float = 1.5,
    weight: float = 0.7,
    seed: int = 0,
    prior: str = "labels",
):
    """A trainer on 4 labelled and 6 rejected 2x2 grey images, plain SGD, no augmentation.

    The threshold lies between the ``threshold_rank``-th and the next largest confidence of the
    rejected images, so exactly ``threshold_rank`` of them pass.
    """
    gen = torch.Generator().manual_seed(seed)
    model = _Linear()
    with torch.no_grad():
        model.fc.weight.copy_(4.0 * torch.randn(3, 4, generator=gen))
        model.fc.bias.copy_(torch.randn(3, generator=gen))
    rng = np.random.default_rng(seed)
    rejected = rng.integers(0, 256, size=(6, 2, 2, 1), dtype=np.uint8)
    clean = rng.integers(0, 3, size=6).astype(np.int64)
    raw = torch.from_numpy(rejected.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    with torch.no_grad():
        confidence = torch.softmax(model(raw), dim=1).max(dim=1).values.sort(descending=True).values
    if threshold_rank == 0:
        threshold = float(confidence[0]) + 1e-4
    else:
        threshold = float(confidence[threshold_rank - 1] + confidence[threshold_rank]) / 2
    trainer = PseudoLabelTrainer(
        rejected_images=rejected,
        rejected_clean_labels=clean,
        pseudo_label=PseudoLabelConfig(
            threshold=threshold,
            mu=mu,
            weight=weight,
            strong_jitter=0.0,
            strong_cutout=0.0,
            prior=prior,
        ),
        label_counts=COUNTS,
        loss_factory=lambda counts: create_loss("logit_adjustment", class_counts=counts),
        model=model,
        loss=create_loss("logit_adjustment", class_counts=COUNTS),
        settings=TrainConfig(epochs=2, batch_size=4, lr=0.1, momentum=0.0, weight_decay=0.0),
        device=torch.device("cpu"),
        seed=seed,
    )
    # What Trainer.fit sets up before the first step.
    trainer.normalize = Normalization((0.0,), (1.0,))
    trainer.train_labels = torch.tensor([0, 0, 1, 2])
    trainer.train_weights = None
    trainer.train_groups = None
    trainer.on_fit_start()
    x = torch.rand(4, 1, 2, 2, generator=gen)
    y = torch.tensor([0, 1, 2, 0])
    return trainer, raw, clean, x, y, threshold


@pytest.mark.parametrize("passing", [0, 2, 5])
def test_the_loss_and_its_gradient_are_the_formula(passing: int) -> None:
    trainer, raw, clean, x, y, threshold = _hand_made(passing)
    model = trainer.model
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    # The formula, by hand: all 6 rejected images are drawn (u = round(1.5 * 4) = 6); those whose
    # softmax confidence of the raw logits reaches the threshold take their argmax as label.
    with torch.no_grad():
        probabilities = torch.softmax(model(raw), dim=1)
    confidence, guess = probabilities.max(dim=1)
    mask = confidence >= threshold
    assert int(mask.sum()) == passing
    reference = _Linear()
    reference.load_state_dict(model.state_dict())
    expected = _la_by_hand(reference(x), y).mean() + 0.7 * (
        _la_by_hand(reference(raw[mask]), guess[mask]).sum() / 6
    )
    expected.backward()
    loss = trainer.training_step(x, y, torch.arange(4), step=0)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # One SGD step (lr 0.1, no momentum, no decay) along the formula's gradient.
    for name, parameter in model.named_parameters():
        grad = dict(reference.named_parameters())[name].grad
        torch.testing.assert_close(parameter.detach(), before[name] - 0.1 * grad)
    # What the epoch's record says: drawn, pseudo-labelled, right (against the clean labels).
    correct = int((guess[mask] == torch.from_numpy(clean)[mask]).sum())
    assert trainer.counts[0].tolist() == [6, passing, correct]
    assert trainer.class_counts[0].tolist() == torch.bincount(guess[mask], minlength=3).tolist()
    assert trainer.counts[1].tolist() == [0, 0, 0]


def test_more_rejected_images_than_exist_are_drawn_with_replacement() -> None:
    trainer, *_ = _hand_made(2, mu=2.0)  # u = 8 > R = 6
    pick, _ = trainer._draw(4, step=3)
    assert len(pick) == 8 and int(pick.max()) < 6
    again, _ = trainer._draw(4, step=3)
    assert torch.equal(pick, again)  # a function of (seed, step)
    other, _ = trainer._draw(4, step=4)
    assert not torch.equal(pick, other)
    small, _ = trainer._draw(2, step=3)  # u = 4 <= 6: distinct images
    assert len(set(small.tolist())) == 4


def test_the_weight_ramps_up_linearly_per_step() -> None:
    trainer, *_ = _hand_made(2)
    assert trainer.weight_at(0) == trainer.weight_at(100) == 0.7  # no ramp-up
    trainer.config = trainer.config.model_copy(update={"rampup_epochs": 2})
    steps = trainer._steps_per_epoch * 2  # 1 step per epoch here
    assert [trainer.weight_at(s) for s in range(steps + 2)] == pytest.approx([0.0, 0.35, 0.7, 0.7])


def test_the_mask_is_the_threshold_on_the_balanced_confidence() -> None:
    # Confidences 1 / (1 + e^-3) = 0.9526 and 1 / (1 + e^-2.9) = 0.9478 around 0.95.
    logits = torch.tensor([[3.0, 0.0], [0.0, 2.9], [0.0, 3.0], [0.1, 0.0]])
    labels, mask, confidence = pseudo_labels(logits, 0.95)
    assert labels.tolist() == [0, 1, 1, 0]
    assert mask.tolist() == [True, False, True, False]
    assert confidence[0].item() == pytest.approx(1 / (1 + math.exp(-3.0)), rel=1e-6)
    # The threshold is inclusive: a confidence equal to it passes.
    assert pseudo_labels(logits, float(confidence[0]))[1].tolist() == [True, False, True, False]
    assert not pseudo_labels(logits, 1.0)[1].any()
    # The mean runs over every drawn image, not only the confident ones.
    loss = pseudo_label_loss(
        CrossEntropyLoss().per_sample, torch.tensor([[0.0, 0.0]]), torch.tensor([1]), drawn=4
    )
    assert loss.item() == pytest.approx(math.log(2.0) / 4, rel=1e-6)
    with pytest.raises(ValueError, match="drawn must be >= 1"):
        pseudo_label_loss(CrossEntropyLoss().per_sample, logits[:0], labels[:0], drawn=0)


def test_when_no_image_passes_the_step_is_the_erm_step() -> None:
    trainer, _, _, x, y, _ = _hand_made(0)
    reference = _Linear()
    reference.load_state_dict(trainer.model.state_dict())
    loss = trainer.training_step(x, y, torch.arange(4), step=0)
    assert loss.item() == pytest.approx(_la_by_hand(reference(x), y).mean().item(), rel=1e-6)
    assert trainer.counts[0].tolist()[:2] == [6, 0]


def test_the_prior_can_count_the_pseudo_labels_trained_on() -> None:
    trainer, _, _, x, y, _ = _hand_made(5, prior="labels_and_pseudo_labels")
    log_prior = trainer.loss.log_prior.clone()
    trainer.training_step(x, y, torch.arange(4), step=0)  # epoch 0: the labels' counts
    torch.testing.assert_close(trainer.loss.log_prior, log_prior)
    pseudo = trainer.class_counts[0].numpy()
    assert pseudo.sum() == 5
    # Epoch 1 (one step per epoch here): n_c + round(lambda / mu * m_c), lambda 0.7, mu 1.5.
    expected = COUNTS + np.rint(0.7 / 1.5 * pseudo).astype(np.int64)
    np.testing.assert_array_equal(trainer.prior_counts(1), expected)
    trainer.training_step(x, y, torch.arange(4), step=1)
    prior = torch.tensor(expected / expected.sum(), dtype=torch.float32)
    torch.testing.assert_close(trainer.loss.log_prior, torch.log(prior))
    with pytest.raises(ValueError, match="needs label_counts and loss_factory"):
        PseudoLabelTrainer(
            rejected_images=np.zeros((1, 2, 2, 1), dtype=np.uint8),
            rejected_clean_labels=None,
            pseudo_label=PseudoLabelConfig(prior="labels_and_pseudo_labels"),
            model=_Linear(),
            loss=create_loss("logit_adjustment", class_counts=COUNTS),
            settings=TrainConfig(),
            device=torch.device("cpu"),
            seed=0,
        )


# ---------------------------------------------------------------- ERM when nothing is rejected


def _overrides(tmp_path: Path, run: str, relabel: Path | None, *extra: str) -> list[str]:
    overrides = [
        "model.options.width=8",
        "train.epochs=2",
        "train.progress=false",
        "train.threads=1",
        "device=cpu",
        "loss.name=logit_adjustment",
        f"run_dir={tmp_path / run}",
        *extra,
    ]
    if relabel is not None:
        overrides.append(f"data.relabel_file={relabel}")
    return overrides


def _same_training(a: Path, b: Path) -> None:
    first, second = load_checkpoint(a / CHECKPOINT_NAME), load_checkpoint(b / CHECKPOINT_NAME)
    for key in ("model", "best_model"):
        assert set(first[key]) == set(second[key])
        for name, tensor in first[key].items():
            assert torch.equal(tensor, second[key][name]), f"{key}.{name} differs"
    assert first["history"] == [
        {**record, "seconds": first["history"][i]["seconds"]}
        for i, record in enumerate(second["history"])
    ]


@pytest.mark.parametrize("case", ["nothing rejected", "weight 0"])
def test_pseudo_label_is_erm_bit_for_bit(tmp_path, case) -> None:
    if case == "nothing rejected":
        pool = build_splits(load_config("demo", ["device=cpu"])).train
        relabel = tmp_path / "all.npz"  # keeps every observed label
        write_relabel_file(relabel, labels=pool.labels, source_index=pool.source_index)
        extra = ("pseudo_label.threshold=0.2",)
    else:
        relabel = _relabel_file(tmp_path / "r.npz")
        extra = ("pseudo_label.threshold=0.2", "pseudo_label.weight=0")
    erm = train_run(load_config("demo", _overrides(tmp_path, "erm", relabel)))
    pseudo = train_run(
        load_config("demo", _overrides(tmp_path, "pl", relabel, "method=pseudo_label", *extra))
    )
    _same_training(erm.run_dir, pseudo.run_dir)
    assert pseudo.test["balanced_accuracy"] == erm.test["balanced_accuracy"]
    rejected = pseudo.metrics["method"]["rejected"]
    assert (rejected == 0) == (case == "nothing rejected")


# ---------------------------------------------------------------- refusals


def test_without_a_relabel_file_it_is_refused_before_anything_is_written(tmp_path) -> None:
    config = load_config("demo", _overrides(tmp_path, "run", None, "method=pseudo_label"))
    with pytest.raises(ConfigError, match=r"^data\.relabel_file: method 'pseudo_label' trains"):
        train_run(config)
    assert not (tmp_path / "run").exists()


def test_through_the_command_line_it_is_one_line(tmp_path, capsys) -> None:
    from autorobust.cli import main

    argv = ["train", "demo", "--run-dir", str(tmp_path / "run"), "--set", "method=pseudo_label"]
    assert main([*argv, "--no-progress", "--device", "cpu"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("autorobust: error: data.relabel_file: method 'pseudo_label'")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("pseudo_label.threshold=0", "pseudo_label.threshold"),
        ("pseudo_label.threshold=1.5", "pseudo_label.threshold"),
        ("pseudo_label.mu=0", "pseudo_label.mu"),
        ("pseudo_label.weight=-1", "pseudo_label.weight"),
        ("pseudo_label.rampup_epochs=-1", "pseudo_label.rampup_epochs"),
        ("pseudo_label.strong_jitter=1", "pseudo_label.strong_jitter"),
        ("pseudo_label.strong_cutout=2", "pseudo_label.strong_cutout"),
        ("pseudo_label.lambda=1", "pseudo_label.lambda: unknown key"),
    ],
)
def test_bad_settings_are_refused_with_their_field(override: str, field: str) -> None:
    with pytest.raises(ConfigError, match=rf"^--set {re.escape(override)}: {re.escape(field)}"):
        load_config("demo", [override])


class _GroupLoss(CrossEntropyLoss):
    uses_groups = True


def test_a_loss_with_group_parameters_is_refused(tmp_path) -> None:
    relabel = _relabel_file(tmp_path / "r.npz")
    config = load_config("demo", _overrides(tmp_path, "run", relabel, "method=pseudo_label"))
    splits = build_splits(config)
    with pytest.raises(ConfigError, match=r"^loss\.name: method 'pseudo_label' cannot train"):
        build_pseudo_label_trainer(
            config,
            splits,
            model=_Linear(),
            loss=_GroupLoss(),
            settings=config.train,
            device=torch.device("cpu"),
            seed=0,
        )
