from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

from autorobust.config import load_config
from autorobust.errors import UnknownNameError
from autorobust.experiment import build_splits, train_run
from autorobust.methods.meta_weight_net.meta_step import (
    jvp_meta_gradient,
    virtual_meta_loss,
    weighted_loss,
)
from autorobust.methods.meta_weight_net.network import MetaWeightNet, MetaWeightNetSpec
from autorobust.models import Classifier, create_model
from autorobust.train.metrics import roc_auc

torch.set_default_dtype(torch.float32)


class _TwoLayer(Classifier):
    """x (B, 1, 2, 2) -> flatten -> tanh(linear) -> head; tiny, so gradients can be written out."""

    def __init__(self, *, num_classes: int = 3, hidden: int = 5, head_only: bool = False) -> None:
        super().__init__(
            num_classes=num_classes,
            in_channels=1,
            feature_dim=4 if head_only else hidden,
            intermediate_dims={} if head_only else {"body": hidden},
        )
        self.head_only = head_only
        self.body = nn.Linear(4, hidden)
        self.head = nn.Linear(4 if head_only else hidden, num_classes)

    def forward_features(self, x):
        x = x.flatten(1)
        return x if self.head_only else torch.tanh(self.body(x))

    def forward_head(self, features):
        return self.head(features)


def _ce(logits, y):
    return F.cross_entropy(logits, y, reduction="none")


def _data(seed: int = 0, b: int = 6, m: int = 4, k: int = 3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 1, 2, 2, generator=g, dtype=torch.float64)
    y = torch.randint(0, k, (b,), generator=g)
    xm = torch.randn(m, 1, 2, 2, generator=g, dtype=torch.float64)
    ym = torch.randint(0, k, (m,), generator=g)
    return x, y, xm, ym


def _weight_net(spec: MetaWeightNetSpec, seed: int = 1, **kwargs) -> MetaWeightNet:
    torch.manual_seed(seed)
    return MetaWeightNet(spec, **kwargs).double()


def _explicit_head_meta_loss(weight, bias, feats, y, feats_m, ym, v, lr, normalize=True):
    """Hand-written MW-Net Eq. 4-5 for a linear softmax layer: ∇_W ℓ_i = (p_i − e_{y_i}) h_iᵀ."""
    p = torch.softmax(feats @ weight.T + bias, dim=1)
    delta = p - F.one_hot(y, p.shape[1]).to(p)  # (B, K)
    scale = v / v.sum() if normalize else v / len(v)
    grad_w = (scale[:, None] * delta).T @ feats  # (K, F)
    grad_b = (scale[:, None] * delta).sum(0)
    logits_m = feats_m @ (weight - lr * grad_w).T + (bias - lr * grad_b)
    return F.cross_entropy(logits_m, ym)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("class_aware", [False, True])
def test_meta_gradient_equals_explicit_unrolled_linear_model(normalize, class_aware):
    model = _TwoLayer(head_only=True).double()
    spec = MetaWeightNetSpec(hidden=(7,), class_embedding=3 if class_aware else 0)
    net = _weight_net(spec, num_classes=3)
    x, y, xm, ym = _data()
    lr = 0.3
    step = virtual_meta_loss(model, net, _ce, x, y, xm, ym, lr=lr, normalize=normalize)
    got = torch.autograd.grad(step.meta_loss, list(net.parameters()))

    losses = _ce(model(x), y).detach()
    v = net(loss=losses, labels=y if class_aware else None)
    explicit = _explicit_head_meta_loss(
        model.head.weight.detach(),
        model.head.bias.detach(),
        x.flatten(1),
        y,
        xm.flatten(1),
        ym,
        v,
        lr,
        normalize,
    )
    expected = torch.autograd.grad(explicit, list(net.parameters()))
    assert torch.allclose(step.meta_loss, explicit, atol=1e-12)
    for g, e in zip(got, expected, strict=True):
        assert g.abs().max() > 1e-6  # the check is not vacuous
        torch.testing.assert_close(g, e, atol=1e-10, rtol=1e-8)


def test_head_scope_meta_gradient_equals_explicit_last_layer_step():
    model = _TwoLayer().double()
    net = _weight_net(MetaWeightNetSpec(hidden=(6, 4), activation="tanh"))
    x, y, xm, ym = _data(seed=3)
    lr = 0.5
    step = virtual_meta_loss(model, net, _ce, x, y, xm, ym, lr=lr, scope="head")
    got = torch.autograd.grad(step.meta_loss, list(net.parameters()))

    with torch.no_grad():
        feats, feats_m = model.forward_features(x), model.forward_features(xm)
    v = net(loss=_ce(model(x), y).detach())
    explicit = _explicit_head_meta_loss(
        model.head.weight.detach(), model.head.bias.detach(), feats, y, feats_m, ym, v, lr
    )
    expected = torch.autograd.grad(explicit, list(net.parameters()))
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, atol=1e-10, rtol=1e-8)


def _flat(net: MetaWeightNet) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


def _set_flat(net: MetaWeightNet, flat: torch.Tensor) -> None:
    offset = 0
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()


@pytest.mark.parametrize("spec_input", ["loss", "loss+features"])
def test_full_meta_gradient_matches_finite_differences_through_a_batchnorm_cnn(spec_input):
    # Full virtual step through conv + batch norm layers, V reading the loss (and features).
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=3, in_channels=1, width=2).double()
    model.train()
    layer = "block2" if spec_input != "loss" else None
    spec = MetaWeightNetSpec(hidden=(5,), input=spec_input, feature_layer=layer)
    net = _weight_net(spec, feature_dim=2 if layer else None)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 1, 8, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (5,), generator=g)
    xm = torch.randn(4, 1, 8, 8, generator=g, dtype=torch.float64)
    ym = torch.randint(0, 3, (4,), generator=g)
    lr = 0.2

    def meta_loss() -> torch.Tensor:
        return virtual_meta_loss(model, net, _ce, x, y, xm, ym, lr=lr).meta_loss

    analytic = torch.cat(
        [gr.reshape(-1) for gr in torch.autograd.grad(meta_loss(), list(net.parameters()))]
    )
    base, eps = _flat(net), 1e-6
    numeric = torch.empty_like(base)
    for j in range(len(base)):
        values = []
        for sign in (1.0, -1.0):
            shifted = base.clone()
            shifted[j] += sign * eps
            _set_flat(net, shifted)
            values.append(
                meta_loss().detach().item()
            )  # no torch.no_grad: the virtual step needs autograd
        numeric[j] = (values[0] - values[1]) / (2 * eps)
    _set_flat(net, base)
    assert analytic.abs().max() > 1e-5
    torch.testing.assert_close(analytic, numeric, atol=1e-5, rtol=1e-4)


def test_virtual_pass_does_not_advance_batchnorm_running_stats():
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=3, in_channels=1, width=2)
    reference = create_model("small_cnn", num_classes=3, in_channels=1, width=2)
    reference.load_state_dict(model.state_dict())
    net = MetaWeightNet(MetaWeightNetSpec.preset("original"))
    x, xm = torch.randn(6, 1, 8, 8), torch.randn(4, 1, 8, 8) + 3.0
    y, ym = torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([0, 1, 2, 0])
    for scope in ("full", "head"):
        virtual_meta_loss(model, net, _ce, x, y, xm, ym, lr=0.1, scope=scope)
        reference(x)  # one plain training forward: what the shared training pass should do
        for name, buffer in reference.named_buffers():
            torch.testing.assert_close(model.state_dict()[name], buffer, msg=name)


def test_weighted_loss_normalisation():
    v, ell = torch.tensor([0.5, 0.25, 0.25]), torch.tensor([1.0, 2.0, 4.0])
    assert float(weighted_loss(v, ell)) == pytest.approx(2.0)
    assert float(weighted_loss(v, ell, normalize=False)) == pytest.approx(2.0 / 3.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 5, 200).astype(float)  # many ties
    labels = rng.random(200) < 0.3
    assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert np.isnan(roc_auc(scores, np.zeros(200, bool)))


# -- end-to-end on digits ---------------------------------------------------------------------


def _digits_config(tmp_path: Path, *overrides: str):
    return load_config(
        "demo",
        [
            "method=reweight",
            "shift.imbalance=none",
            "shift.rho=1",
            "shift.noise_rate=0.4",
            "train.epochs=12",
            "train.progress=false",
            "model.options.width=8",
            "device=cpu",
            "reweight.hidden=[16]",
            "reweight.lr=0.003",
            f"run_dir={tmp_path}",
            *overrides,
        ],
    )


@pytest.fixture(scope="module")
def digits_noisy_splits():
    return build_splits(
        load_config("demo", ["shift.imbalance=none", "shift.rho=1", "shift.noise_rate=0.4"])
    )


def test_digits_40pct_noise_weights_decrease_with_loss_and_noisy_get_less(
    tmp_path, digits_noisy_splits
):
    config = _digits_config(tmp_path)
    metrics = train_run(config, splits=digits_noisy_splits, evaluate_test=False).metrics
    method = metrics["method"]
    curve = np.array(method["weight_vs_loss"]["weight"])
    # The learned V decreases with the loss: over the grid, and strongly from low to high loss.
    assert np.corrcoef(np.arange(len(curve)), curve)[0, 1] < -0.5
    assert curve[0] > curve[-1] + 0.2
    assert method["mean_weight_noisy"] < method["mean_weight_clean"] - 0.1
    assert method["noise_auc"] > 0.8
    assert method["recorded_fraction"] == 1.0
    assert (tmp_path / "weight_vs_loss.png").stat().st_size > 1000
    assert (tmp_path / "weight_distribution.png").stat().st_size > 1000
    saved = np.load(tmp_path / "sample_weights.npz")
    assert saved["weights"].shape == saved["noise_mask"].shape == (len(digits_noisy_splits.train),)


def test_unknown_feature_layer_names_the_field(tmp_path, digits_noisy_splits):
    config = _digits_config(tmp_path, "reweight.input=features", "reweight.feature_layer=conv9")
    with pytest.raises(UnknownNameError, match=r"reweight.feature_layer: .*'conv9'.*block1"):
        train_run(config, splits=digits_noisy_splits, evaluate_test=False)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_jvp_meta_gradient_equals_the_unrolled_one(normalize, dropout):
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=3, in_channels=1, width=2, dropout=dropout)
    model = model.double().train()
    spec = MetaWeightNetSpec(
        hidden=(5, 3), input="loss+features", feature_layer="block3", class_embedding=2
    )
    net = _weight_net(spec, feature_dim=4, num_classes=3)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(6, 1, 8, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (6,), generator=g)
    xm = torch.randn(4, 1, 8, 8, generator=g, dtype=torch.float64)
    ym = torch.randint(0, 3, (4,), generator=g)
    buffers = {k: v.clone() for k, v in model.state_dict().items()}

    torch.manual_seed(7)  # the same dropout masks for both
    unrolled = virtual_meta_loss(model, net, _ce, x, y, xm, ym, lr=0.4, normalize=normalize)
    expected = torch.autograd.grad(unrolled.meta_loss, list(net.parameters()))
    model.load_state_dict(buffers)
    torch.manual_seed(7)
    fast = jvp_meta_gradient(model, net, _ce, x, y, xm, ym, lr=0.4, normalize=normalize)
    torch.testing.assert_close(fast.meta_loss, unrolled.meta_loss.detach(), atol=1e-12, rtol=0)
    for got, want in zip(fast.grads, expected, strict=True):
        assert want.abs().max() > 1e-8
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-7)
    torch.testing.assert_close(fast.losses, unrolled.losses)
