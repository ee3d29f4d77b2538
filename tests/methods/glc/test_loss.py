"""The forward-corrected loss against its formula by hand, its special cases and its refusals."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from autorobust.errors import ConfigError
from autorobust.losses import create_loss
from autorobust.methods.glc.noise_model import NoiseModel, estimate_clean_counts

# A 3-class example with a zero in every column: true class 1 is never observed as 0, class 2
# never as 1, class 0 always keeps some mass on 2.
T = [[0.7, 0.2, 0.1], [0.0, 0.9, 0.1], [0.3, 0.0, 0.7]]
CLEAN = [6.0, 3.0, 1.0]  # π = (0.6, 0.3, 0.1)
OBSERVED = [40, 35, 25]
Z = [1.0, -0.5, 0.2]


def _by_hand(z: list[float], y: int, prior: list[float], tau: float) -> float:
    """−log Σ_i T_iy softmax(z + τ log π)_i with plain floats."""
    w = [p**tau * math.exp(v) for p, v in zip(prior, z, strict=True)]
    q = [v / sum(w) for v in w]
    return -math.log(sum(q[i] * T[i][y] for i in range(3)))


def test_composed_loss_equals_formula_by_hand() -> None:
    loss = create_loss(
        "forward_corrected", class_counts=OBSERVED, transition=T, clean_counts=CLEAN, tau=1.0
    )
    z = torch.tensor([Z, Z, Z], dtype=torch.float64)
    values = loss.per_sample(z, torch.tensor([0, 1, 2]))
    # softmax(z + log π) ∝ π e^z = (1.63097, 0.18196, 0.12214) / 1.93507; label 1:
    # −log(0.842846 · 0.2 + 0.094033 · 0.9 + 0.063119 · 0) = −log 0.253199 = 1.373580.
    np.testing.assert_allclose(values[1].item(), 1.3735802107191581, rtol=1e-6)
    expected = [_by_hand(Z, y, [0.6, 0.3, 0.1], 1.0) for y in range(3)]
    np.testing.assert_allclose(values.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(expected, [0.49605268527, 1.37358021072, 1.98143237701], rtol=1e-9)
    half = create_loss(
        "forward_corrected", class_counts=OBSERVED, transition=T, clean_counts=CLEAN, tau=0.5
    )
    np.testing.assert_allclose(
        half.per_sample(z, torch.tensor([0, 1, 2])).numpy(),
        [_by_hand(Z, y, [0.6, 0.3, 0.1], 0.5) for y in range(3)],
        rtol=1e-6,
    )


def test_identity_transition_is_cross_entropy_and_logit_adjustment() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(32, 3, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, 3, (32,), generator=g)
    eye = np.eye(3).tolist()
    plain = create_loss("forward_corrected", class_counts=OBSERVED, transition=eye, tau=0.0)
    torch.testing.assert_close(plain.per_sample(z, y), F.cross_entropy(z, y, reduction="none"))
    observed = create_loss(
        "forward_corrected", class_counts=OBSERVED, transition=eye, tau=1.0, prior="observed"
    )
    la = create_loss("logit_adjustment", class_counts=OBSERVED, tau=1.0)
    torch.testing.assert_close(observed.per_sample(z.float(), y), la.per_sample(z.float(), y))


def test_gradients_finite_with_zeros_in_transition_and_match_finite_differences() -> None:
    loss = create_loss(
        "forward_corrected", class_counts=OBSERVED, transition=T, clean_counts=CLEAN
    ).double()
    z = torch.tensor(
        [Z, [80.0, -80.0, 0.0], [-80.0, 80.0, 0.0], [0.0, 0.0, 90.0]],
        dtype=torch.float64,
        requires_grad=True,
    )
    # Sample 2: a confident class-1 posterior and label 2 (T_12 = 0.1 > 0); sample 3: class 2
    # certain and label 0, reachable only through T_20 = 0.3: finite losses, finite gradients.
    y = torch.tensor([1, 2, 2, 0])
    value = loss(z, y)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(z.grad).all()
    assert torch.autograd.gradcheck(
        lambda x: loss.per_sample(x, torch.tensor([1, 0, 2])),
        (torch.tensor([Z, [0.3, -1.0, 2.0], [2.0, 0.1, -0.4]], dtype=torch.float64,
                      requires_grad=True),),
    )  # fmt: skip


def test_prior_sources() -> None:
    estimated = estimate_clean_counts(np.array(T), np.array(OBSERVED))
    by_transition = create_loss("forward_corrected", class_counts=OBSERVED, transition=T)
    np.testing.assert_allclose(
        by_transition.prior_probabilities, estimated / estimated.sum(), rtol=1e-6
    )
    observed = create_loss(
        "forward_corrected", class_counts=OBSERVED, transition=T, prior="observed"
    )
    np.testing.assert_allclose(observed.prior_probabilities, [0.40, 0.35, 0.25], rtol=1e-6)


def test_noise_model_file_gives_transition_and_clean_prior(tmp_path) -> None:
    path = NoiseModel(
        transition=np.array(T), clean_counts=np.array(CLEAN), observed_counts=np.array(OBSERVED)
    ).save(tmp_path / "noise_model.json")
    from_file = create_loss("forward_corrected", class_counts=OBSERVED, noise_model_file=str(path))
    given = create_loss(
        "forward_corrected", class_counts=OBSERVED, transition=T, clean_counts=CLEAN
    )
    z, y = torch.tensor([Z, Z]), torch.tensor([1, 2])
    torch.testing.assert_close(from_file.per_sample(z, y), given.per_sample(z, y))
    np.testing.assert_allclose(from_file.prior_probabilities, [0.6, 0.3, 0.1], rtol=1e-6)
    assert from_file.hyperparameters()["noise_model_file"] == str(path)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, r"needs the noise model: give transition .* exactly one \(got neither\)"),
        ({"transition": T, "noise_model_file": "x.json"}, r".* exactly one \(got both\)"),
        ({"transition": [[1.0, 0.0], [0.0, 1.0]]},
         r"transition must be 3 x 3 .*got shape \(2, 2\)"),
        ({"transition": [[0.5, 0.5, 0.0]] * 2 + [["a", 0, 1]]}, r"transition must be a 3 x 3 list"),
        ({"transition": [[0.7, 0.2, 0.1], [0.0, 0.9, 0.1], [0.4, 0.0, 0.7]]},
         r"transition row 2 sums to 1.1, expected 1"),
        ({"transition": [[1.2, -0.2, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]},
         r"transition\[0\]\[1\] is negative \(-0.2\)"),
        ({"transition": [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]},
         r"transition column 1 is all 0, but label 1 is observed: its samples would have "
         r"infinite loss"),
        ({"transition": [[math.nan, 0.0, 1.0]] * 3}, r"transition\[0\]\[0\] is not finite \(nan\)"),
        ({"transition": T, "tau": -1.0}, r"tau must be in \[0.0, inf\), got -1.0"),
        ({"transition": T, "prior": "noisy"}, r"prior must be one of clean, observed, got 'noisy'"),
        ({"transition": T, "prior": "observed", "clean_counts": CLEAN},
         r"clean_counts has no effect with prior 'observed'"),
        ({"transition": T, "clean_counts": [1.0, 0.0, 2.0]},
         r"clean_counts must be 3 finite numbers > 0"),
        ({"transition": T, "gamma": 1.0}, r"unknown hyper-parameter 'gamma'; accepted: transition"),
    ],
)  # fmt: skip
def test_bad_options_are_one_line_config_errors(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=r"^loss 'forward_corrected': " + message) as info:
        create_loss("forward_corrected", class_counts=OBSERVED, **options)
    assert "\n" not in str(info.value)


def test_bad_noise_model_file_is_named(tmp_path) -> None:
    missing = tmp_path / "missing.json"
    with pytest.raises(
        ConfigError, match=rf"noise_model_file: noise model {missing}: no such file"
    ):
        create_loss("forward_corrected", class_counts=OBSERVED, noise_model_file=str(missing))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "autorobust-noise-model", "version": 1}))
    with pytest.raises(ConfigError, match=rf"noise model {bad}: missing num_classes"):
        create_loss("forward_corrected", class_counts=OBSERVED, noise_model_file=str(bad))
    four = NoiseModel(
        transition=np.eye(4), clean_counts=np.ones(4), observed_counts=np.ones(4, dtype=int)
    ).save(tmp_path / "four.json")
    with pytest.raises(ConfigError, match=r"four.json has 4 classes, the data 3"):
        create_loss("forward_corrected", class_counts=OBSERVED, noise_model_file=str(four))


def _digits_noise_model(tmp_path) -> str:
    k = 10
    transition = np.full((k, k), 0.2 / (k - 1))
    np.fill_diagonal(transition, 0.8)
    return str(
        NoiseModel(
            transition=transition,
            clean_counts=np.linspace(100.0, 10.0, k),
            observed_counts=np.full(k, 50),
        ).save(tmp_path / "noise_model.json")
    )


def test_trains_through_the_command_line_with_a_noise_model_file(tmp_path, capsys) -> None:
    from autorobust.cli import main

    run_dir = tmp_path / "run"
    argv = ["train", "demo", "--run-dir", str(run_dir), "--no-progress", "--device", "cpu",
            "--set", "train.epochs=1", "--set", "model.options.width=8",
            "--set", "loss.name=forward_corrected",
            "--set", f"loss.options.noise_model_file={_digits_noise_model(tmp_path)}"]  # fmt: skip
    assert main(argv) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["run"]["loss"] == "forward_corrected"
    assert 0.0 <= metrics["test"]["balanced_accuracy"] <= 1.0
    # a bad file is refused before the run directory exists: one line, status 2
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    argv[3] = str(tmp_path / "refused")
    argv[-1] = f"loss.options.noise_model_file={bad}"
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert f"noise model {bad}: not an autorobust noise model" in lines[0]
    assert not (tmp_path / "refused").exists()
