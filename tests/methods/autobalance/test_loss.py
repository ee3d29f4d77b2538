"""The parametric loss contains CE, weighted CE, LA, CDT and VS as special points."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from autorobust.errors import ConfigError
from autorobust.losses import create_loss
from autorobust.methods.autobalance.loss import ParametricLoss, class_to_group

COUNTS = np.array([50, 20, 8, 3])


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(16, 4, generator=g, dtype=torch.float32), torch.randint(
        0, 4, (16,), generator=g
    )


def test_default_is_cross_entropy(batch):
    z, y = batch
    loss = create_loss("parametric", class_counts=COUNTS)
    torch.testing.assert_close(loss(z, y), F.cross_entropy(z, y))


def test_weighted_ce(batch):
    z, y = batch
    w = [2.0, 1.0, 0.5, 4.0]
    loss = create_loss("parametric", class_counts=COUNTS, weight=w)
    expected = torch.tensor(w)[y] * F.cross_entropy(z, y, reduction="none")
    torch.testing.assert_close(loss.per_sample(z, y), expected)


def test_logit_adjustment_init_equals_la_loss(batch):
    z, y = batch
    la = create_loss("logit_adjustment", class_counts=COUNTS, tau=1.5)
    ours = create_loss("parametric", class_counts=COUNTS, init="logit_adjustment", tau=1.5)
    torch.testing.assert_close(ours.per_sample(z, y), la.per_sample(z, y))


def test_cdt_and_vs(batch):
    z, y = batch
    gamma, tau = 0.3, 1.0
    delta = torch.tensor((COUNTS / COUNTS.max()) ** gamma, dtype=torch.float32)
    iota = torch.tensor(tau * np.log(COUNTS / COUNTS.sum()), dtype=torch.float32)
    cdt = create_loss("parametric", class_counts=COUNTS, cdt_gamma=gamma)
    torch.testing.assert_close(
        cdt.per_sample(z, y), F.cross_entropy(z * delta, y, reduction="none")
    )
    vs = create_loss(
        "parametric", class_counts=COUNTS, cdt_gamma=gamma, init="logit_adjustment", tau=tau
    )
    expected = F.cross_entropy(z * delta + iota, y, reduction="none")
    torch.testing.assert_close(vs.per_sample(z, y), expected)


def test_sigmoid_parameterisation_round_trip(batch):
    _z, _y = batch
    loss = ParametricLoss(class_counts=COUNTS, scale_parameterisation="sigmoid")
    np.testing.assert_allclose(
        loss.class_parameters()["scale"], [1 / (1 + np.exp(-1))] * 4, rtol=1e-6
    )
    fixed = ParametricLoss(
        class_counts=COUNTS, scale=[0.5, 0.25, 0.75, 0.9], scale_parameterisation="sigmoid"
    )
    np.testing.assert_allclose(fixed.class_parameters()["scale"], [0.5, 0.25, 0.75, 0.9], rtol=1e-6)
    with pytest.raises(ConfigError, match="scale must be < 1 with sigmoid"):
        ParametricLoss(class_counts=COUNTS, scale=2.0, scale_parameterisation="sigmoid")


def test_groups_share_parameters():
    np.testing.assert_array_equal(class_to_group(5, group_size=2), [0, 0, 1, 1, 2])
    np.testing.assert_array_equal(class_to_group(4, class_groups=[3, 3, 7, 3]), [0, 0, 1, 0])
    loss = ParametricLoss(class_counts=COUNTS, group_size=2, offset=[1.0, -1.0])
    assert loss.raw_offset.shape == (1, 2)
    assert loss.class_parameters()["offset"] == [1.0, 1.0, -1.0, -1.0]
    with pytest.raises(ConfigError, match="offset must be a number, 2 finite values"):
        ParametricLoss(class_counts=COUNTS, group_size=2, offset=[1.0, 2.0, 3.0])


def test_group_sensitive_rows(batch):
    z, y = batch
    offset = [[0.0, 0.0, 0.0, 0.0], [1.0, -1.0, 0.5, 0.0]]
    loss = ParametricLoss(class_counts=COUNTS, num_attributes=2, offset=offset)
    a = torch.arange(16) % 2
    expected = F.cross_entropy(z + torch.tensor(offset)[a], y, reduction="none")
    torch.testing.assert_close(loss.per_sample(z, y, a), expected)
    with pytest.raises(ValueError, match="needs the group attributes"):
        loss(z, y)


def test_params_file_and_options_round_trip(tmp_path, batch):
    z, y = batch
    learned = ParametricLoss(
        class_counts=COUNTS,
        scale=[1.0, 1.2, 0.8, 2.0],
        offset=[0.3, 0.0, -0.2, -1.0],
        weight=[1.0, 1.0, 2.0, 0.5],
    )
    path = tmp_path / "learned_loss.json"
    path.write_text(json.dumps({"options": learned.class_parameters()}))
    again = create_loss("parametric", class_counts=COUNTS, params_file=str(path))
    torch.testing.assert_close(again.per_sample(z, y), learned.per_sample(z, y))
    # explicit options win over the file
    override = create_loss("parametric", class_counts=COUNTS, params_file=str(path), offset=0.0)
    assert override.class_parameters()["offset"] == [0.0] * 4
    with pytest.raises(ConfigError, match=r"params_file .*missing\.json: no such file"):
        create_loss("parametric", class_counts=COUNTS, params_file=str(tmp_path / "missing.json"))


def test_gradients_reach_raw_parameters(batch):
    z, y = batch
    loss = ParametricLoss(class_counts=COUNTS)
    loss(z, y).backward()
    for p in (loss.raw_scale, loss.raw_offset, loss.raw_weight):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_invalid_options():
    with pytest.raises(ConfigError, match="init must be one of ce, logit_adjustment"):
        ParametricLoss(class_counts=COUNTS, init="focal")
    with pytest.raises(ConfigError, match="scale and weight must be > 0"):
        ParametricLoss(class_counts=COUNTS, weight=[1.0, 0.0, 1.0, 1.0])
    with pytest.raises(ConfigError, match="class_counts must be >= 1"):
        ParametricLoss(class_counts=[3, 0, 2])
