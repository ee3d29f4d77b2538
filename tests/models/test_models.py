"""Contract tests run on every registered model, plus registry and functional_call checks."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from autorobust.errors import ConfigError, UnknownNameError
from autorobust.models import (
    Classifier,
    create_model,
    functional_forward_intermediates,
    list_models,
    register_model,
)

MODEL_NAMES = list_models()
SHAPES = [(2, 1, 8, 8), (2, 1, 28, 28), (2, 3, 32, 32)]


def _make(name: str, in_channels: int = 1, num_classes: int = 5, seed: int = 0) -> Classifier:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model(name, num_classes=num_classes, in_channels=in_channels)


def _images(shape: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_registry_lists_the_baseline_models() -> None:
    assert {"small_cnn", "resnet20", "resnet32"} <= set(MODEL_NAMES)


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("shape", SHAPES)
def test_shapes_finite_and_gradients_reach_every_parameter(name: str, shape: tuple) -> None:
    model = _make(name, in_channels=shape[1], num_classes=5)
    assert model.num_classes == 5 and model.in_channels == shape[1]
    logits = model(_images(shape))
    assert logits.shape == (2, 5)
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, pname
        assert torch.isfinite(param.grad).all(), pname
        assert param.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_equals_head_of_features(name: str) -> None:
    model = _make(name).eval()
    x = _images((3, 1, 28, 28))
    features = model.forward_features(x)
    assert features.shape == (3, model.feature_dim)
    torch.testing.assert_close(model(x), model.forward_head(features))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_intermediates_dims_and_logits(name: str) -> None:
    model = _make(name).eval()
    x = _images((3, 1, 28, 28))
    layers = model.intermediate_layers
    assert len(layers) >= 3
    assert set(model.intermediate_dims) == set(layers)
    module_names = dict(model.named_modules())
    assert all(layer in module_names for layer in layers)
    logits, feats = model.forward_intermediates(x, layers)
    torch.testing.assert_close(logits, model(x))
    assert list(feats) == list(layers)
    for layer in layers:
        assert feats[layer].shape == (3, model.intermediate_dims[layer]), layer
    # The last intermediate layer feeds global pooling, so its pooled output is the feature vector.
    torch.testing.assert_close(feats[layers[-1]], model.forward_features(x))
    # Hooks are removed after the call.
    assert all(not m._forward_hooks for m in model.modules())


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_construction_is_deterministic_under_a_seed(name: str) -> None:
    a, b, c = _make(name, seed=3), _make(name, seed=3), _make(name, seed=4)
    for (key, ta), tb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(ta, tb), key
    pairs = zip(a.parameters(), c.parameters(), strict=True)
    assert any(not torch.equal(ta, tc) for ta, tc in pairs)
    x = _images((2, 1, 28, 28))
    torch.testing.assert_close(a.eval()(x), b.eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_functional_call_intermediates_give_gradients_wrt_the_dict(name: str) -> None:
    model = _make(name)
    x = _images((4, 1, 8, 8))
    layer = model.intermediate_layers[1]
    # A virtual parameter set w' = w + 0.01 (as in the MW-Net step), and copied buffers so the
    # training-mode pass does not advance the model's own batch-norm statistics.
    params = {k: (v.detach() + 0.01).requires_grad_() for k, v in model.named_parameters()}
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    before = {k: v.clone() for k, v in model.named_buffers()}

    logits, feats = functional_forward_intermediates(model, (params, buffers), x, [layer])
    assert logits.shape == (4, 5) and feats[layer].shape == (4, model.intermediate_dims[layer])
    (logits.sum() + feats[layer].sum()).backward()
    for key, param in params.items():
        assert param.grad is not None and torch.isfinite(param.grad).all(), key
    assert all(p.grad is None for p in model.parameters())
    for key, value in model.named_buffers():
        assert torch.equal(value, before[key]), key

    # Same result as forward_intermediates of a model that holds w' itself.
    shifted = _make(name)
    with torch.no_grad():
        for p in shifted.parameters():
            p.add_(0.01)
    expected_logits, expected = shifted.forward_intermediates(x, [layer])
    torch.testing.assert_close(logits, expected_logits)
    torch.testing.assert_close(feats[layer], expected[layer])


def test_capture_works_with_plain_functional_call() -> None:
    model = _make("small_cnn").eval()
    x = _images((2, 1, 8, 8))
    params = dict(model.named_parameters())
    with model.capture_intermediates(["block1", "block4"]) as captured:
        logits = functional_call(model, params, (x,))
    assert sorted(captured) == ["block1", "block4"]
    grad = torch.autograd.grad(captured["block1"].sum(), params["block1.0.weight"])[0]
    assert grad.shape == params["block1.0.weight"].shape
    torch.testing.assert_close(logits, model(x))


def test_hooks_are_removed_when_the_forward_pass_fails() -> None:
    model = _make("small_cnn")
    with pytest.raises(RuntimeError):
        model.forward_intermediates(torch.zeros(2, 3, 8, 8), ["block2"])  # wrong channel count
    assert all(not m._forward_hooks for m in model.modules())


def test_unknown_intermediate_layer_lists_valid_layers() -> None:
    model = _make("resnet32")
    with pytest.raises(UnknownNameError, match=r"'conv9'.*stem, layer1, layer2, layer3"):
        model.forward_intermediates(torch.zeros(1, 1, 8, 8), ["conv9"])


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown model 'resnet99'.*resnet32.*small_cnn"):
        create_model("resnet99", num_classes=10, in_channels=1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_classes": 1, "in_channels": 1}, r"num_classes must be an integer >= 2, got 1"),
        ({"num_classes": 10, "in_channels": 0}, r"in_channels must be an integer >= 1, got 0"),
        ({"num_classes": 2.5, "in_channels": 1}, r"num_classes .* got 2\.5"),
        ({"num_classes": 10, "in_channels": 1, "widht": 8}, r"'widht'; accepted: width, dropout"),
        ({"num_classes": 10, "in_channels": 1, "dropout": 1.0}, r"dropout must be in \[0, 1\)"),
    ],
)
def test_invalid_settings_raise_config_error(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        create_model("small_cnn", **kwargs)


def test_resnet_options_and_sizes() -> None:
    with pytest.raises(ConfigError, match=r"model 'resnet32': unknown option 'depth'"):
        create_model("resnet32", num_classes=10, in_channels=1, depth=8)
    with pytest.raises(ConfigError, match=r"model 'resnet': width must be an integer >= 1, got 0"):
        create_model("resnet20", num_classes=10, in_channels=1, width=0)
    narrow = create_model("resnet32", num_classes=10, in_channels=1, width=4)
    assert narrow.feature_dim == 16 and narrow.intermediate_dims["layer2"] == 8
    assert narrow(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    counts = {
        name: sum(p.numel() for p in _make(name, in_channels=3, num_classes=10).parameters())
        for name in ("resnet20", "resnet32")
    }
    # He et al. 2016, Table 6: 0.27 M and 0.46 M parameters.
    assert counts == {"resnet20": 269_722, "resnet32": 464_154}
    assert len(_make("resnet32").layer1) == 5 and len(_make("resnet20").layer3) == 3


def test_small_cnn_width_and_dropout() -> None:
    model = create_model("small_cnn", num_classes=3, in_channels=1, width=8, dropout=0.5)
    assert model.feature_dim == 16
    assert model.intermediate_dims == {"block1": 8, "block2": 8, "block3": 16, "block4": 16}
    x = _images((4, 1, 8, 8))
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        a = model(x)
        b = model(x)
    assert not torch.allclose(a, b)  # dropout active in training mode
    model.eval()
    torch.testing.assert_close(model(x), model(x))


def test_register_model_rejects_duplicates() -> None:
    with pytest.raises(RuntimeError, match="registered twice"):
        register_model("small_cnn")(lambda **kw: None)
