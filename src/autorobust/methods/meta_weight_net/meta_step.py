"""Meta-Weight-Net sample reweighting (Shu et al., NeurIPS 2019), ``method: reweight``.

Per training batch (x_i, ỹ_i), i = 1..B, and a batch of the clean meta set (x^m_j, y^m_j):

1. ℓ_i = ℓ(f(x_i; w), ỹ_i) with the run's training loss; v_i = V(ℓ_i, h_l(x_i), ỹ_i; φ) with
   V's inputs detached; L(w, φ) = Σ_i v_i ℓ_i / Σ_i v_i (paper Eq. 3, normalised as in the code;
   ``normalize=False`` gives the code's other option, the mean of v_i ℓ_i).
2. Virtual step ŵ(φ) = w − α ∇_w L(w, φ) (plain SGD, α = the current learning rate), keeping the
   graph to φ (Eq. 4).
3. Meta loss L^meta(φ) = mean_j CE(f(x^m_j; ŵ(φ)), y^m_j); one step of V's optimiser on
   ∇_φ L^meta (Eq. 5).
4. Real step: v_i recomputed by the updated V without gradient to φ, and the classifier's
   optimiser step on L(w, φ_new) (Eq. 6).

Steps 2–3 use :func:`torch.func.functional_call` over the model's own parameters (no copied
"MetaModule" layers). The training forward pass of step 1 is shared by steps 2 and 4: the weights w
are the same in both, so the graph is the same; only V's outputs differ. That pass is the model's
real training forward, so batch-norm running statistics advance once per step, as in plain
training; the virtual model's pass on the meta batch runs on *copies* of the buffers, so it does
not advance them.

Cheaper options: ``meta_interval = k`` updates V only every k-th step (the steps between reuse the
last V and cost one weighted CE step); ``meta_scope = "head"`` lets the virtual step move only the
linear output layer ``head``: the meta batch's penultimate features are computed once without
gradient, and the meta-gradient runs through the head only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from autorobust.methods.meta_weight_net.network import MetaWeightNet
from autorobust.models.base import Classifier

__all__ = [
    "MetaGradient",
    "VirtualStep",
    "jvp_meta_gradient",
    "virtual_meta_loss",
    "weight_inputs_forward",
    "weighted_loss",
]


def weighted_loss(weights: Tensor, losses: Tensor, normalize: bool = True) -> Tensor:
    """Σ v_i ℓ_i / Σ v_i (``normalize``) or mean_i v_i ℓ_i; weights and losses float (B,)."""
    if normalize:
        return (weights * losses).sum() / weights.sum()
    return (weights * losses).mean()


def weight_inputs_forward(
    model: nn.Module, x: Tensor, feature_layer: str | None
) -> tuple[Tensor, Tensor | None]:
    """One forward pass: logits float (B, K) and pooled ``feature_layer`` output float (B, D).

    The features are not detached here; None when ``feature_layer`` is None.
    """
    if feature_layer is None:
        return model(x), None
    # A V reading features is built only for a Classifier (build_reweighting_trainer checks it).
    classifier = cast(Classifier, model)
    with classifier.capture_intermediates([feature_layer]) as captured:
        logits = model(x)
    return logits, captured[feature_layer]


@dataclass
class VirtualStep:
    """What :func:`virtual_meta_loss` computed.

    Attributes:
        meta_loss: scalar, L^meta(φ), differentiable with respect to V's parameters φ.
        losses: per-sample training losses float (B,), with their graph to the model's weights
            (reused by the real step).
        features: pooled, detached features float (B, D) that V read, or None.
    """

    meta_loss: Tensor
    losses: Tensor
    features: Tensor | None


def virtual_meta_loss(
    model: nn.Module,
    weight_net: MetaWeightNet,
    per_sample_loss: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    x_meta: Tensor,
    y_meta: Tensor,
    *,
    lr: float,
    normalize: bool = True,
    scope: Literal["full", "head"] = "full",
) -> VirtualStep:
    """Steps 1–3 of the module docstring up to the meta loss (MW-Net Eq. 3–5).

    Args:
        model: the classifier in training mode (a :class:`~autorobust.models.Classifier`; with
            ``scope="head"`` its output layer must be the submodule ``head``).
        weight_net: V.
        per_sample_loss: ``(logits (B, K), labels (B,)) -> losses (B,)``, the training loss.
        x, y: training batch, float (B, C, H, W) normalised, int64 (B,) observed labels.
        x_meta, y_meta: clean meta batch, float (M, C, H, W), int64 (M,).
        lr: α, the virtual SGD step size (the classifier's current learning rate).
        normalize: Σ v ℓ / Σ v (True) or mean of v ℓ.
        scope: ``"full"``: ŵ updates every trainable parameter; ``"head"``: only ``head``'s.

    Returns:
        The meta loss (graph to φ) and the training losses (graph to w) for the real step.
    """
    spec = weight_net.spec
    layer = spec.feature_layer if spec.uses_features else None
    logits, features = weight_inputs_forward(model, x, layer)
    losses = per_sample_loss(logits, y)
    features = None if features is None else features.detach()
    weights = weight_net(
        loss=losses.detach(), features=features, labels=y if spec.class_embedding else None
    )
    train_loss = weighted_loss(weights, losses, normalize)
    if scope == "full":
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    else:
        head = model.get_submodule("head")
        named = [(f"head.{n}", p) for n, p in head.named_parameters() if p.requires_grad]
    names = [n for n, _ in named]
    params = [p for _, p in named]
    # allow_unused: a parameter the forward pass does not touch keeps its value.
    grads = torch.autograd.grad(train_loss, params, create_graph=True, allow_unused=True)
    virtual = {
        n: p if g is None else p - lr * g for n, p, g in zip(names, params, grads, strict=True)
    }
    # Copies: the virtual model's training-mode pass must not advance the real running stats.
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    if scope == "full":
        meta_logits = functional_call(model, (virtual, buffers), (x_meta,))
    else:
        # The virtual step moves only the head, so the meta batch's head inputs do not depend
        # on φ: one forward pass without gradient (on the buffer copies) gives them.
        captured: list[Tensor] = []
        head = model.get_submodule("head")
        handle = head.register_forward_pre_hook(lambda m, inputs: captured.append(inputs[0]))
        try:
            with torch.no_grad():
                functional_call(model, buffers, (x_meta,))
        finally:
            handle.remove()
        head_params = {n.removeprefix("head."): t for n, t in virtual.items()}
        meta_logits = functional_call(head, head_params, (captured[-1],))
    meta_loss = F.cross_entropy(meta_logits, y_meta)
    return VirtualStep(meta_loss=meta_loss, losses=losses, features=features)


@dataclass
class MetaGradient:
    """What :func:`jvp_meta_gradient` computed.

    Attributes:
        grads: ∇_φ L^meta, one tensor per parameter of V (in ``weight_net.parameters()`` order).
        meta_loss: L^meta at the virtual weights, a detached scalar.
        losses: per-sample training losses float (B,), with their graph to the model's weights.
        features: pooled, detached features float (B, D) that V read, or None.
    """

    grads: tuple[Tensor, ...]
    meta_loss: Tensor
    losses: Tensor
    features: Tensor | None


def jvp_meta_gradient(
    model: nn.Module,
    weight_net: MetaWeightNet,
    per_sample_loss: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    x_meta: Tensor,
    y_meta: Tensor,
    *,
    lr: float,
    normalize: bool = True,
) -> MetaGradient:
    """∇_φ L^meta of the full virtual step, exactly, without a reverse-over-reverse pass.

    The weighted loss is linear in the weights v, so with u = ∇_w L^meta(ŵ) (a vector, no graph)
    and d_i = u · ∇_w ℓ_i(w) (one forward-mode pass, :func:`torch.func.jvp`), the chain rule
    through ŵ = w − α Σ_i v_i ∇ℓ_i / Σ_i v_i gives

        ∂L^meta/∂v_i = −α (d_i − Σ_j v_j d_j / Σ_j v_j) / Σ_j v_j     (normalised)
        ∂L^meta/∂v_i = −α d_i / B                                   (mean)

    and ∇_φ L^meta = Σ_i ∂L^meta/∂v_i ∇_φ v_i. This equals what :func:`virtual_meta_loss` and
    ``autograd.grad(meta_loss, φ)`` compute (tested), at about half the cost: the reverse-over-
    reverse pass through the classifier is replaced by a forward-mode pass. The training forward
    pass is the model's real one (its graph is kept for the real step); the virtual and the
    forward-mode passes run on buffer copies, and the forward-mode pass replays the random state
    of the training pass so that dropout masks agree.
    """
    spec = weight_net.spec
    layer = spec.feature_layer if spec.uses_features else None
    devices = [x.device] if x.device.type == "cuda" else []
    rng_state = _rng_state(x.device)  # replayed by the forward-mode pass (same dropout masks)
    logits, features = weight_inputs_forward(model, x, layer)
    losses = per_sample_loss(logits, y)
    features = None if features is None else features.detach()
    weights = weight_net(
        loss=losses.detach(), features=features, labels=y if spec.class_embedding else None
    )
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    names = [n for n, _ in named]
    params = [p for _, p in named]
    train_loss = weighted_loss(weights.detach(), losses, normalize)
    grads = torch.autograd.grad(train_loss, params, retain_graph=True, allow_unused=True)
    virtual = {
        n: (p.detach() if g is None else p.detach() - lr * g).requires_grad_(True)
        for n, p, g in zip(names, params, grads, strict=True)
    }
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    meta_loss = F.cross_entropy(functional_call(model, (virtual, buffers), (x_meta,)), y_meta)
    u = torch.autograd.grad(meta_loss, list(virtual.values()), allow_unused=True)
    tangents = {
        n: torch.zeros_like(p) if t is None else t.detach()
        for n, p, t in zip(names, params, u, strict=True)
    }
    primals = {n: p.detach() for n, p in zip(names, params, strict=True)}

    def per_sample_at(parameters: dict[str, Tensor]) -> Tensor:
        return per_sample_loss(functional_call(model, parameters, (x,)), y)

    with (
        torch.random.fork_rng(devices=devices, device_type=x.device.type),
        _untracked_batch_norm(model),
    ):
        _set_rng_state(x.device, rng_state)
        # (output, jvp_out): jvp returns a third element only with has_aux
        directional = torch.func.jvp(per_sample_at, (primals,), (tangents,))[1]
    directional = directional.detach()
    w = weights.detach()
    if normalize:
        total = w.sum()
        d_weights = -lr * (directional - (w * directional).sum() / total) / total
    else:
        d_weights = -lr * directional / len(w)
    phi = list(weight_net.parameters())
    phi_grads = torch.autograd.grad(weights, phi, grad_outputs=d_weights, allow_unused=True)
    phi_grads = tuple(
        torch.zeros_like(p) if g is None else g for p, g in zip(phi, phi_grads, strict=True)
    )
    return MetaGradient(
        grads=phi_grads, meta_loss=meta_loss.detach(), losses=losses, features=features
    )


@contextmanager
def _untracked_batch_norm(model: nn.Module) -> Iterator[None]:
    """Batch norm layers stop updating running statistics (training mode: same outputs).

    In training mode batch norm normalises with the batch's statistics whether or not it tracks
    running ones, so the outputs are unchanged; the in-place running-stat update, which
    :func:`torch.func.jvp` refuses and which must not happen twice per step, is skipped.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.track_running_stats for m in layers]
    try:
        for m in layers:
            m.track_running_stats = False
        yield
    finally:
        for m, value in zip(layers, saved, strict=True):
            m.track_running_stats = value


def _rng_state(device: torch.device) -> tuple[Tensor, Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(device: torch.device, state: tuple[Tensor, Tensor | None]) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)
