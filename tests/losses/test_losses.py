"""Each loss against values computed by hand, its special cases, and the factory's errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from autorobust.errors import ConfigError, UnknownNameError
from autorobust.losses import ClassificationLoss, create_loss, list_losses

LOGITS = [[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-0.5, 1.5, 0.0]]
TARGET = [0, 2, 1]
COUNTS = [100, 10, 1]
ALL_LOSSES = list_losses()
# Options a loss cannot do without (a noise model estimated from data has no default).
REQUIRED_OPTIONS = {
    "forward_corrected": {"transition": [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.2, 0.0, 0.8]]}
}


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(LOGITS, dtype=torch.float64), torch.tensor(TARGET)


def _softmax(row: list[float]) -> list[float]:
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


def _ce(row: list[float], y: int) -> float:
    return -math.log(_softmax(row)[y])


def _check(loss: ClassificationLoss, expected: list[float], rtol: float = 1e-6) -> None:
    logits, target = _inputs()
    per_sample = loss.per_sample(logits, target)
    assert per_sample.shape == (3,)
    np.testing.assert_allclose(per_sample.detach().numpy(), expected, rtol=rtol)
    np.testing.assert_allclose(loss(logits, target).item(), sum(expected) / 3, rtol=rtol)


def test_registry_names() -> None:
    assert ALL_LOSSES == [
        "balanced_softmax",
        "class_balanced",
        "cross_entropy",
        "focal",
        "forward_corrected",
        "generalized_ce",
        "ldam",
        "logit_adjustment",
        "parametric",
    ]


def test_cross_entropy_by_hand() -> None:
    expected = [_ce(r, y) for r, y in zip(LOGITS, TARGET, strict=True)]
    _check(create_loss("cross_entropy", class_counts=None), expected)


def test_label_smoothing_by_hand() -> None:
    eps = 0.1
    expected = [
        (1 - eps) * _ce(r, y) + eps / 3 * sum(-math.log(p) for p in _softmax(r))
        for r, y in zip(LOGITS, TARGET, strict=True)
    ]
    _check(create_loss("cross_entropy", class_counts=None, label_smoothing=eps), expected)


def test_focal_by_hand() -> None:
    expected = [
        -((1 - _softmax(r)[y]) ** 2.0) * math.log(_softmax(r)[y])
        for r, y in zip(LOGITS, TARGET, strict=True)
    ]
    _check(create_loss("focal", class_counts=None), expected)
    expected = [
        -((1 - _softmax(r)[y]) ** 0.5) * math.log(_softmax(r)[y])
        for r, y in zip(LOGITS, TARGET, strict=True)
    ]
    _check(create_loss("focal", class_counts=None, gamma=0.5), expected)


def test_class_balanced_by_hand() -> None:
    beta = 0.99
    raw = [(1 - beta) / (1 - beta**n) for n in COUNTS]
    weights = [w * 3 / sum(raw) for w in raw]
    expected = [weights[y] * _ce(r, y) for r, y in zip(LOGITS, TARGET, strict=True)]
    _check(create_loss("class_balanced", class_counts=COUNTS, beta=beta), expected)
    focal = [
        weights[y] * -((1 - _softmax(r)[y]) ** 1.5) * math.log(_softmax(r)[y])
        for r, y in zip(LOGITS, TARGET, strict=True)
    ]
    loss = create_loss("class_balanced", class_counts=COUNTS, beta=beta, base="focal", gamma=1.5)
    _check(loss, focal)


def test_logit_adjustment_by_hand() -> None:
    tau = 1.5
    log_prior = [math.log(n / sum(COUNTS)) for n in COUNTS]
    expected = [
        _ce([z + tau * lp for z, lp in zip(r, log_prior, strict=True)], y)
        for r, y in zip(LOGITS, TARGET, strict=True)
    ]
    _check(create_loss("logit_adjustment", class_counts=COUNTS, tau=tau), expected)


def test_balanced_softmax_by_hand() -> None:
    expected = []
    for r, y in zip(LOGITS, TARGET, strict=True):
        weighted = [n * math.exp(z) for n, z in zip(COUNTS, r, strict=True)]
        expected.append(-math.log(weighted[y] / sum(weighted)))
    _check(create_loss("balanced_softmax", class_counts=COUNTS), expected)


def test_generalized_ce_by_hand() -> None:
    q = 0.7
    expected = [(1 - _softmax(r)[y] ** q) / q for r, y in zip(LOGITS, TARGET, strict=True)]
    _check(create_loss("generalized_ce", class_counts=None), expected)


def _ldam_by_hand(max_margin: float, scale: float, weights: list[float] | None) -> list[float]:
    raw = [n**-0.25 for n in COUNTS]
    margins = [m * max_margin / max(raw) for m in raw]
    out = []
    for r, y in zip(LOGITS, TARGET, strict=True):
        shifted = [scale * (z - (margins[y] if k == y else 0.0)) for k, z in enumerate(r)]
        out.append((1.0 if weights is None else weights[y]) * _ce(shifted, y))
    return out


def test_ldam_by_hand_and_deferred_reweighting() -> None:
    loss = create_loss("ldam", class_counts=COUNTS, max_margin=0.4, scale=2.0, drw_beta=0.999)
    raw = [(1 - 0.999) / (1 - 0.999**n) for n in COUNTS]
    weights = [w * 3 / sum(raw) for w in raw]
    unweighted = _ldam_by_hand(0.4, 2.0, None)
    weighted = _ldam_by_hand(0.4, 2.0, weights)
    _check(loss, unweighted)  # before any epoch hook: no weights
    loss.on_epoch_start(7, 10)  # default start floor(0.8 * 10) = 8
    _check(loss, unweighted)
    loss.on_epoch_start(8, 10)
    _check(loss, weighted)

    fixed = create_loss("ldam", class_counts=COUNTS, max_margin=0.4, scale=2.0, drw_epoch=2)
    fixed.on_epoch_start(1, 100)
    assert not fixed.reweighting
    fixed.on_epoch_start(2, 100)
    assert fixed.reweighting

    off = create_loss("ldam", class_counts=COUNTS, max_margin=0.4, scale=2.0, drw=False)
    off.on_epoch_start(99, 100)
    _check(off, unweighted)


def test_ldam_rarest_class_gets_max_margin() -> None:
    loss = create_loss("ldam", class_counts=[16, 1, 81], max_margin=0.6)
    np.testing.assert_allclose(loss.margins.numpy(), [0.3, 0.6, 0.2], rtol=1e-6)


@pytest.mark.parametrize(
    ("name", "hparams"),
    [
        ("focal", {"gamma": 0.0}),
        ("class_balanced", {"beta": 0.0}),
        ("logit_adjustment", {"tau": 0.0}),
        ("ldam", {"max_margin": 1e-12, "scale": 1.0, "drw": False}),
    ],
)
def test_special_cases_equal_cross_entropy(name: str, hparams: dict) -> None:
    logits, target = _inputs()
    ce = create_loss("cross_entropy", class_counts=None).per_sample(logits, target)
    other = create_loss(name, class_counts=COUNTS, **hparams).per_sample(logits, target)
    torch.testing.assert_close(other, ce, rtol=1e-6, atol=1e-9)


def test_generalized_ce_limits() -> None:
    logits, target = _inputs()
    ce = create_loss("cross_entropy", class_counts=None).per_sample(logits, target)
    near_zero = create_loss("generalized_ce", class_counts=None, q=1e-4).per_sample(logits, target)
    # (1 - p^q)/q = -log p - q (log p)^2 / 2 + O(q^2): the gap is about 1e-4 here.
    torch.testing.assert_close(near_zero, ce, rtol=0, atol=3e-4)
    assert not torch.allclose(near_zero, ce, rtol=0, atol=1e-8)
    mae = create_loss("generalized_ce", class_counts=None, q=1.0).per_sample(logits, target)
    p_y = torch.softmax(logits, dim=1)[torch.arange(3), target]
    torch.testing.assert_close(mae, 1 - p_y)


def test_balanced_softmax_equals_logit_adjustment_tau_one() -> None:
    logits, target = _inputs()
    bs = create_loss("balanced_softmax", class_counts=COUNTS).per_sample(logits, target)
    la = create_loss("logit_adjustment", class_counts=COUNTS, tau=1.0).per_sample(logits, target)
    torch.testing.assert_close(bs, la)


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_gradients_finite_and_defaults_work(name: str) -> None:
    loss = create_loss(name, class_counts=COUNTS, **REQUIRED_OPTIONS.get(name, {}))
    loss.on_epoch_start(9, 10)  # LDAM re-weighting on
    logits = torch.tensor(LOGITS, requires_grad=True)
    extreme = torch.tensor([[60.0, -60.0, 0.0]], requires_grad=True)  # p_y rounds to 1
    for x, y in ((logits, torch.tensor(TARGET)), (extreme, torch.tensor([0]))):
        value = loss(x, y)
        assert value.shape == () and torch.isfinite(value)
        value.backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
    assert logits.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_search_space_names_real_hyperparameters(name: str) -> None:
    required = REQUIRED_OPTIONS.get(name, {})
    loss = create_loss(name, class_counts=COUNTS, **required)
    for key, (low, high, scale) in type(loss).search_space.items():
        assert key in loss.hyperparameters()
        assert low < high and scale in ("linear", "log", "int")
        create_loss(name, class_counts=COUNTS, **required, **{key: low})
        create_loss(name, class_counts=COUNTS, **required, **{key: high})
    if name == "cross_entropy":
        assert type(loss).search_space == {}


def test_focal_small_gamma_gradient_finite_at_certainty() -> None:
    logits = torch.tensor([[200.0, 0.0, 0.0]], requires_grad=True)
    create_loss("focal", class_counts=None, gamma=0.5)(logits, torch.tensor([0])).backward()
    assert torch.isfinite(logits.grad).all()


def test_unknown_hyperparameter_names_loss_key_and_accepted() -> None:
    with pytest.raises(
        ConfigError,
        match=r"loss 'focal': unknown hyper-parameter 'gama'; "
        r"accepted: gamma",
    ):
        create_loss("focal", class_counts=None, gama=1.0)
    with pytest.raises(ConfigError, match=r"'balanced_softmax'.*'tau'; accepted: \(none\)"):
        create_loss("balanced_softmax", class_counts=COUNTS, tau=1.0)


def test_unknown_loss_lists_valid_names() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown loss 'hinge'; valid: balanced_softmax"):
        create_loss("hinge", class_counts=None)


@pytest.mark.parametrize("name", ["class_balanced", "logit_adjustment", "ldam", "balanced_softmax"])
def test_zero_class_count_is_a_config_error(name: str) -> None:
    with pytest.raises(ConfigError, match=rf"loss '{name}': class_counts must be >= 1 .*\[1\]"):
        create_loss(name, class_counts=[5, 0, 3])


@pytest.mark.parametrize(
    ("name", "hparams", "match"),
    [
        ("focal", {"gamma": -1.0}, r"loss 'focal': gamma must be in \[0.0, inf\), got -1.0"),
        ("generalized_ce", {"q": 0.0}, r"q must be in \(0.0, 1.0\], got 0.0"),
        ("class_balanced", {"beta": 1.0}, r"beta must be in \[0.0, 1.0\)"),
        ("class_balanced", {"base": "mse"}, r"base must be one of .*got 'mse'"),
        ("ldam", {"drw_epoch": -1}, r"drw_epoch must be None or an integer >= 0, got -1"),
        ("ldam", {"scale": "big"}, r"scale must be a number .*got 'big'"),
        ("logit_adjustment", {"tau": float("nan")}, r"tau must be a number"),
    ],
)
def test_invalid_hyperparameter_values(name: str, hparams: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        create_loss(name, class_counts=COUNTS, **hparams)


@pytest.mark.parametrize(
    ("counts", "match"),
    [
        (None, r"class_counts is required"),
        ([5], r"1-D sequence of >= 2 counts"),
        ([5, -1, 2], r"class_counts must be >= 0"),
        ([5.5, 2, 1], r"class_counts must be integers"),
    ],
)
def test_invalid_class_counts(counts: object, match: str) -> None:
    with pytest.raises(ConfigError, match=rf"loss 'logit_adjustment': .*{match}"):
        create_loss("logit_adjustment", class_counts=counts)


def test_class_count_mismatch_with_logits() -> None:
    loss = create_loss("logit_adjustment", class_counts=[3, 2, 1, 1])
    logits, target = _inputs()
    with pytest.raises(ValueError, match="logits have 3 classes but class_counts has 4"):
        loss(logits, target)


def test_numpy_counts_and_float32_logits() -> None:
    loss = create_loss("class_balanced", class_counts=np.array(COUNTS, dtype=np.int32))
    value = loss(torch.tensor(LOGITS), torch.tensor(TARGET))
    assert value.dtype == torch.float32
    np.testing.assert_allclose(loss.class_weights.sum().item(), 3.0, rtol=1e-6)
