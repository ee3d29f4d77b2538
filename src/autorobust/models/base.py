"""The classifier interface every model implements, and intermediate-feature capture.

A :class:`Classifier` maps images (B, C, H, W) to logits (B, K) in two steps, ``forward_features``
(backbone and global pooling, (B, feature_dim)) and ``forward_head`` (the linear layer), as timm's
models do. It also names a few intermediate layers whose globally pooled outputs a Meta-Weight-Net
may read (the NAS of MW-Net searches which one feeds V; docs/methods/meta_weight_net.md).

Intermediate outputs are captured with forward hooks that exist only while a capture is open, so a
capture also works when the forward pass runs under :func:`torch.func.functional_call` with a dict
of (virtual) parameters, as the MW-Net meta-step does: the hooks fire on the same modules, whose
parameters are swapped for the dict's tensors, and the captured features depend on those tensors.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

from torch import Tensor, nn
from torch.func import functional_call

from autorobust.errors import ConfigError, UnknownNameError

__all__ = ["Classifier", "functional_forward_intermediates"]


class Classifier(nn.Module):
    """Base class of the image classifiers.

    Subclasses build their layers after calling ``super().__init__`` and implement
    :meth:`forward_features` and :meth:`forward_head`. The linear output layer of every model is the
    submodule ``head``, so a caller can select "the last layer" by name.

    Args:
        num_classes: K, the number of logits.
        in_channels: C, image channels (1 grey, 3 RGB).
        feature_dim: width of the pooled feature vector that ``forward_head`` consumes.
        intermediate_dims: ordered mapping from a submodule's dotted name (as in
            ``named_modules()``) to its channel count after global average pooling.
    """

    head: nn.Linear  # the output layer; every subclass sets it in its __init__

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        feature_dim: int,
        intermediate_dims: Mapping[str, int],
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.feature_dim = feature_dim
        self._intermediate_dims = dict(intermediate_dims)

    @property
    def intermediate_layers(self) -> tuple[str, ...]:
        """Dotted submodule names whose pooled outputs can be captured, from input to output."""
        return tuple(self._intermediate_dims)

    @property
    def intermediate_dims(self) -> dict[str, int]:
        """Channel count of each intermediate layer's output after global average pooling."""
        return dict(self._intermediate_dims)

    def forward_features(self, x: Tensor) -> Tensor:
        """Backbone and global pooling: float (B, C, H, W) -> float (B, feature_dim)."""
        raise NotImplementedError

    def forward_head(self, features: Tensor) -> Tensor:
        """Output layer: float (B, feature_dim) -> logits float (B, num_classes)."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """Logits float (B, num_classes) of images float (B, C, H, W)."""
        return self.forward_head(self.forward_features(x))

    def check_layers(self, layers: Sequence[str]) -> list[str]:
        """Return ``layers`` as a list after checking each is one of :attr:`intermediate_layers`.

        Raises:
            UnknownNameError: a name is not an intermediate layer; the message lists the valid ones.
        """
        if isinstance(layers, str):  # a bare string would be split into characters
            layers = [layers]
        valid = self.intermediate_layers
        for layer in layers:
            if layer not in valid:
                raise UnknownNameError(
                    f"unknown intermediate layer {layer!r} of {type(self).__name__}; "
                    f"valid: {', '.join(valid)}"
                )
        return list(layers)

    @contextmanager
    def capture_intermediates(self, layers: Sequence[str]) -> Iterator[dict[str, Tensor]]:
        """Context manager collecting the pooled outputs of ``layers`` during any forward pass.

        Yields a dict that each forward pass inside the block fills with ``layer -> (B, dim)``
        (4-D outputs averaged over H and W, 2-D outputs kept), overwriting the previous pass's
        entries. The hooks are removed when the block exits, also on an exception. It works for a
        plain call ``model(x)`` and for ``torch.func.functional_call(model, params, (x,))``.
        """
        layers = self.check_layers(layers)
        modules = dict(self.named_modules())
        captured: dict[str, Tensor] = {}
        handles = []
        try:
            for layer in layers:
                handles.append(modules[layer].register_forward_hook(_pooling_hook(layer, captured)))
            yield captured
        finally:
            for handle in handles:
                handle.remove()

    def forward_intermediates(
        self, x: Tensor, layers: Sequence[str]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits and the pooled outputs of ``layers`` in one forward pass.

        Args:
            x: images float (B, C, H, W).
            layers: names from :attr:`intermediate_layers`.

        Returns:
            logits float (B, num_classes), and ``layer -> float (B, intermediate_dims[layer])``.

        Raises:
            UnknownNameError: a layer is not one of :attr:`intermediate_layers`.
        """
        with self.capture_intermediates(layers) as captured:
            logits = self(x)
        return logits, dict(captured)


def functional_forward_intermediates(
    model: Classifier,
    parameters_and_buffers: Mapping[str, Tensor] | Sequence[Mapping[str, Tensor]],
    x: Tensor,
    layers: Sequence[str],
) -> tuple[Tensor, dict[str, Tensor]]:
    """:meth:`Classifier.forward_intermediates` with the model's tensors replaced by a dict's.

    This is the MW-Net virtual step's forward pass: ``parameters_and_buffers`` maps names from
    ``named_parameters()`` / ``named_buffers()`` to tensors (e.g. w − α∇L), and the returned logits
    and features are differentiable with respect to them. Names left out keep the module's own
    tensor. Pass copies of the buffers to keep batch-norm running statistics of the real model
    unchanged by a training-mode pass.

    Returns:
        logits float (B, num_classes), and ``layer -> float (B, intermediate_dims[layer])``.
    """
    # functional_call takes plain dicts (or a list of them), not any Mapping
    tensors: dict[str, Tensor] | list[dict[str, Tensor]]
    if isinstance(parameters_and_buffers, Mapping):
        tensors = dict(parameters_and_buffers)
    else:
        tensors = [dict(part) for part in parameters_and_buffers]
    with model.capture_intermediates(layers) as captured:
        logits = functional_call(model, tensors, (x,))
    return logits, dict(captured)


def _pooling_hook(layer: str, captured: dict[str, Tensor]):
    def hook(module: nn.Module, inputs: object, output: Tensor) -> None:
        if not isinstance(output, Tensor) or output.dim() not in (2, 4):
            shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
            raise RuntimeError(f"layer {layer!r} must output a 2-D or 4-D tensor, got {shape}")
        captured[layer] = output.mean(dim=(2, 3)) if output.dim() == 4 else output

    return hook


def _check_positive_int(value: object, name: str, minimum: int, where: str) -> int:
    """``value`` as an int after checking it is an integer >= ``minimum`` (bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(f"{where}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _kaiming_init(module: nn.Module) -> None:
    """He et al. 2015 normal init (fan-in, ReLU gain) for conv and linear weights, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
