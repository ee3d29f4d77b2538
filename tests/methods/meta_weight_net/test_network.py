from __future__ import annotations

import pytest
import torch

from autorobust.config import load_config
from autorobust.errors import ConfigError, UnknownNameError
from autorobust.methods.meta_weight_net.network import MetaWeightNet, MetaWeightNetSpec


def test_original_preset_is_1_100_1_on_the_loss():
    spec = MetaWeightNetSpec.preset("original")
    net = MetaWeightNet(spec)
    shapes = [tuple(p.shape) for p in net.parameters()]
    assert shapes == [(100, 1), (100,), (1, 100), (1,)]
    assert spec.describe() == "loss-100-1"
    assert spec == MetaWeightNetSpec.from_config(
        load_config("demo").reweight
    )  # the config's defaults are the original


@pytest.mark.parametrize(
    ("spec", "kwargs", "in_dim"),
    [
        (MetaWeightNetSpec(hidden=()), {}, 1),
        (
            MetaWeightNetSpec(hidden=(8, 4, 4, 2), input="features", feature_layer="b"),
            {"feature_dim": 6},
            6,
        ),
        (
            MetaWeightNetSpec(
                hidden=(5,), input="loss+features", feature_layer="b", class_embedding=3
            ),
            {"feature_dim": 6, "num_classes": 4},
            10,
        ),
    ],
)
def test_every_input_kind_gives_weights_in_unit_interval_and_gradients(spec, kwargs, in_dim):
    torch.manual_seed(0)
    net = MetaWeightNet(spec, **kwargs)
    assert net.mlp[0].in_features == in_dim
    assert len([m for m in net.mlp if isinstance(m, torch.nn.Linear)]) == len(spec.hidden) + 1
    loss = torch.rand(7) * 5
    features = torch.randn(7, 6)
    labels = torch.randint(0, 4, (7,))
    v = net(loss=loss, features=features, labels=labels)
    assert v.shape == (7,) and v.dtype == torch.float32
    assert bool(((v > 0) & (v < 1)).all())
    v.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_spec_json_round_trip_and_errors():
    spec = MetaWeightNetSpec(
        hidden=(64, 16),
        activation="tanh",
        input="features",
        feature_layer="block3",
        class_embedding=8,
    )
    assert MetaWeightNetSpec.from_json(spec.to_json()) == spec
    assert spec.describe() == "block3+cls8-64-16-1"
    with pytest.raises(ConfigError, match="at most 4 layers, got 5"):
        MetaWeightNetSpec(hidden=(1, 2, 3, 4, 5))
    with pytest.raises(ConfigError, match="input 'features' needs feature_layer"):
        MetaWeightNetSpec(input="features")
    with pytest.raises(UnknownNameError, match="unknown activation 'swish'; valid: relu"):
        MetaWeightNetSpec(activation="swish")
    with pytest.raises(ConfigError, match=r"best.json: unknown keys \['depth'\]"):
        MetaWeightNetSpec.from_dict({"depth": 2}, where="best.json")
    with pytest.raises(ConfigError, match=r"best\.json: not valid JSON"):
        MetaWeightNetSpec.from_json("{", where="best.json")
    with pytest.raises(
        UnknownNameError, match="unknown MetaWeightNet preset 'big'; valid: original"
    ):
        MetaWeightNetSpec.preset("big")
    with pytest.raises(ConfigError, match="needs feature_dim >= 1, got None"):
        MetaWeightNet(MetaWeightNetSpec(input="features", feature_layer="b"))


def test_config_section_validation_names_the_field():
    with pytest.raises(ConfigError, match="reweight: input 'loss\\+features' needs feature_layer"):
        load_config("demo", ["reweight.input=loss+features"])
    with pytest.raises(ConfigError, match=r"reweight\.meta_interval"):
        load_config("demo", ["reweight.meta_interval=0"])
    with pytest.raises(
        ConfigError, match=r"reweight\.search: .*min_hidden_layers \(3\) must not exceed"
    ):
        load_config(
            "demo", ["reweight.search.min_hidden_layers=3", "reweight.search.max_hidden_layers=1"]
        )
