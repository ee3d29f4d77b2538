"""AutoBalance's family with a fixed noise transition: −ω_ỹ log (Tᵀ softmax(Δ ⊙ z + ι))_ỹ.

Checked against the formula by hand, against the ``forward_corrected`` loss at the logit-
adjustment start, through ``torch.func.functional_call`` (the bilevel trainer's route), and as a
training method (exact resume, determinism) with ``bilevel.transition`` set.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch.func import functional_call

from autorobust.errors import ConfigError
from autorobust.losses import create_loss
from autorobust.methods.autobalance.loss import ParametricLoss
from autorobust.testing import TrainingMethodTests

T = [[0.7, 0.2, 0.1], [0.0, 0.9, 0.1], [0.3, 0.0, 0.7]]
OBSERVED = [40, 35, 25]
CLEAN = [6.0, 3.0, 1.0]
Z = [1.0, -0.5, 0.2]


def _by_hand(z, y, scale, offset, weight) -> float:
    """−ω_y log Σ_i T_iy softmax(Δ ⊙ z + ι)_i with plain floats."""
    h = [d * v + o for d, v, o in zip(scale, z, offset, strict=True)]
    e = [math.exp(v) for v in h]
    q = [v / sum(e) for v in e]
    return -weight[y] * math.log(sum(q[i] * T[i][y] for i in range(3)))


def test_equals_the_formula_by_hand() -> None:
    scale, offset, weight = [1.5, 1.0, 0.5], [0.3, -0.2, -0.1], [2.0, 1.0, 0.5]
    loss = ParametricLoss(
        class_counts=OBSERVED, scale=scale, offset=offset, weight=weight, transition=T
    )
    z = torch.tensor([Z] * 3, dtype=torch.float32)
    expected = [_by_hand(Z, y, scale, offset, weight) for y in range(3)]
    np.testing.assert_allclose(
        loss.per_sample(z, torch.tensor([0, 1, 2])).detach().numpy(), expected, rtol=1e-5
    )
    # label 1 by hand: h = (1.8, -0.7, 0.0), softmax = (0.80168, 0.06581, 0.13252),
    # Σ_i T_i1 q_i = 0.2 · 0.80168 + 0.9 · 0.06581 = 0.21956; −1.0 · log 0.21956 = 1.51613
    np.testing.assert_allclose(expected[1], 1.51613, atol=1e-5)


def test_logit_adjustment_start_at_clean_prior_equals_forward_corrected_loss() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(64, 3, generator=g) * 2
    y = torch.randint(0, 3, (64,), generator=g)
    ours = ParametricLoss(
        class_counts=OBSERVED, init="logit_adjustment", prior_counts=CLEAN, transition=T
    )
    np.testing.assert_allclose(ours.class_parameters()["offset"], np.log([0.6, 0.3, 0.1]))
    glc = create_loss(
        "forward_corrected", class_counts=OBSERVED, transition=T, clean_counts=CLEAN, tau=1.0
    )
    torch.testing.assert_close(ours.per_sample(z, y), glc.per_sample(z, y))


def test_functional_call_gives_the_gradient_in_the_offsets() -> None:
    """The bilevel trainer evaluates the loss with functional_call and only the parameters passed;
    the transition buffer must come from the module."""
    loss = ParametricLoss(class_counts=OBSERVED, transition=T).double()
    z = torch.tensor([Z, [0.3, 2.0, -1.0], [60.0, -60.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([1, 0, 2])
    offset = torch.tensor([[0.4, -0.1, -0.3]], dtype=torch.float64, requires_grad=True)
    params = {name: p.detach() for name, p in loss.named_parameters()}
    value = functional_call(loss, {**params, "raw_offset": offset}, (z, y, None))
    (grad,) = torch.autograd.grad(value, offset)
    by_hand = lambda o: np.mean(  # noqa: E731
        [_by_hand(z[b].tolist(), int(y[b]), [1.0] * 3, o, [1.0] * 3) for b in range(3)]
    )
    # T is stored as float32 log T, hence not 1e-9
    assert value.item() == pytest.approx(by_hand([0.4, -0.1, -0.3]), rel=1e-6)
    eps = 1e-6
    numeric = [
        (by_hand([0.4 + eps * (i == 0), -0.1 + eps * (i == 1), -0.3 + eps * (i == 2)])
         - by_hand([0.4 - eps * (i == 0), -0.1 - eps * (i == 1), -0.3 - eps * (i == 2)]))
        / (2 * eps)
        for i in range(3)
    ]  # fmt: skip
    np.testing.assert_allclose(grad[0].numpy(), numeric, rtol=1e-5, atol=1e-9)
    assert torch.isfinite(grad).all()


def test_without_transition_nothing_changes() -> None:
    loss = ParametricLoss(class_counts=OBSERVED)
    assert set(loss.state_dict()) == {"raw_scale", "raw_offset", "raw_weight", "slot_of_class"}
    assert "transition" not in loss.class_parameters()
    with_t = ParametricLoss(class_counts=OBSERVED, transition=T)
    assert "log_transition" in with_t.state_dict()


def test_transition_travels_with_the_learned_options(tmp_path) -> None:
    loss = ParametricLoss(class_counts=OBSERVED, offset=[0.5, 0.0, -0.5], transition=T)
    options = loss.class_parameters()
    assert options["transition"] == T
    again = create_loss("parametric", class_counts=OBSERVED, **options)
    path = tmp_path / "learned_loss.json"
    path.write_text(json.dumps({"options": options}))
    from_file = create_loss("parametric", class_counts=OBSERVED, params_file=str(path))
    z, y = torch.tensor([Z, Z]), torch.tensor([0, 2])
    torch.testing.assert_close(again.per_sample(z, y), loss.per_sample(z, y))
    torch.testing.assert_close(from_file.per_sample(z, y), loss.per_sample(z, y))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"transition": [[1.0, 0.0], [0.0, 1.0]]}, r"transition must be 3 x 3"),
        ({"transition": [[0.5, 0.6, 0.0], [0, 1, 0], [0, 0, 1]]}, r"transition row 0 sums to 1.1"),
        ({"prior_counts": CLEAN},
         r"prior_counts only sets the logit-adjustment start; init is 'ce'"),
        ({"init": "logit_adjustment", "prior_counts": [1.0, -1.0, 1.0]},
         r"prior_counts must be 3 finite numbers > 0"),
    ],
)  # fmt: skip
def test_bad_options(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=r"^loss 'parametric': " + message):
        ParametricLoss(class_counts=OBSERVED, **options)


_NOISE = [[0.8 if i == j else 0.2 / 9 for j in range(10)] for i in range(10)]


class TestBilevelRunForwardCorrected(TrainingMethodTests):
    """One bilevel run of the forward-corrected family from logit adjustment at given prior counts
    (the shape of a noise model's output): exact resume and determinism with the new buffer."""

    config_name = "digits-lt20-autobalance"
    overrides = (
        "method=autobalance",
        "bilevel.warmup_epochs=1",
        "bilevel.init=logit_adjustment",
        f"bilevel.transition={json.dumps(_NOISE)}",
        f"bilevel.init_prior_counts={json.dumps([100.0 / (c + 1) for c in range(10)])}",
        "train.batch_size=64",
        "model.options.width=8",
        # This tiny run's Hessian is indefinite: undamped, CG skips every upper step, and a run
        # that skips more than half of them fails (as it should); damped, the steps are taken.
        "bilevel.damping=10",
    )
