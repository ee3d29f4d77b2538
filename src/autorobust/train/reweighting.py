"""Meta-Weight-Net sample reweighting (Shu et al. 2019; METHODS.md section 2), ``method: reweight``.

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

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from autorobust.config.reweight import ReweightConfig
from autorobust.errors import ConfigError, UnknownNameError
from autorobust.models.meta_weight_net import MetaWeightNet
from autorobust.train.registry import register_trainer
from autorobust.train.trainer import LabeledImages, Trainer

__all__ = [
    "MetaGradient",
    "ReweightingTrainer",
    "VirtualStep",
    "jvp_meta_gradient",
    "roc_auc",
    "virtual_meta_loss",
    "weight_inputs_forward",
    "weighted_loss",
]

SAMPLE_WEIGHTS_NAME = "sample_weights.npz"
_CURVE_POINTS = 50


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
    with model.capture_intermediates([feature_layer]) as captured:
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
        named = [(f"head.{n}", p) for n, p in model.head.named_parameters() if p.requires_grad]
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
        handle = model.head.register_forward_pre_hook(lambda m, inputs: captured.append(inputs[0]))
        try:
            with torch.no_grad():
                functional_call(model, buffers, (x_meta,))
        finally:
            handle.remove()
        head_params = {n.removeprefix("head."): t for n, t in virtual.items()}
        meta_logits = functional_call(model.head, head_params, (captured[-1],))
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
        _, directional = torch.func.jvp(per_sample_at, (primals,), (tangents,))
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


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for boolean labels ``positive`` (N,), ties averaged.

    Mann–Whitney form: AUC = (Σ ranks of positives − P(P+1)/2) / (P·N); NaN if a class is empty.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # Average ranks over runs of tied scores.
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(scores)]])
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


class ReweightingTrainer(Trainer):
    """A :class:`Trainer` whose every step is the MW-Net meta step (see the module docstring).

    During the last epoch it records each training sample's weight v_i and loss ℓ_i (from the real
    step), for the noise AUC and the plots of :meth:`extra_metrics`.

    Args:
        weight_net: V, built for the model (feature width) and the number of classes.
        reweight: the ``reweight`` config section (V's optimiser, meta interval and scope, ...).
        **trainer_kwargs: the keyword arguments of :class:`Trainer`.
    """

    def __init__(
        self, *, weight_net: MetaWeightNet, reweight: ReweightConfig, **trainer_kwargs: Any
    ) -> None:
        super().__init__(**trainer_kwargs)
        self.weight_net = weight_net.to(self.device)
        self.reweight = reweight
        if reweight.optimizer == "adam":
            self.weight_optimizer: torch.optim.Optimizer = torch.optim.Adam(
                self.weight_net.parameters(), lr=reweight.lr, weight_decay=reweight.weight_decay
            )
        else:
            self.weight_optimizer = torch.optim.SGD(
                self.weight_net.parameters(),
                lr=reweight.lr,
                momentum=0.9,
                weight_decay=reweight.weight_decay,
            )
        self.recorded_weights: Tensor | None = None
        self.recorded_losses: Tensor | None = None

    # -- hooks ---------------------------------------------------------------------------------

    def on_fit_start(self) -> None:
        n = len(self.train_labels)
        self._steps_per_epoch = math.ceil(n / self.settings.batch_size)
        self._record_from = (self.settings.epochs - 1) * self._steps_per_epoch
        self.recorded_weights = torch.full((n,), float("nan"))
        self.recorded_losses = torch.full((n,), float("nan"))

    def training_step(
        self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, step: int
    ) -> torch.Tensor:
        """The MW-Net step (module docstring); returns the detached weighted training loss."""
        spec = self.weight_net.spec
        labels = y if spec.class_embedding else None
        self.model.train()
        if step % self.reweight.meta_interval == 0:
            x_meta, y_meta = self._meta_batch(step)
            args = (self.model, self.weight_net, self.loss.per_sample, x, y, x_meta, y_meta)
            lr = self.optimizer.param_groups[0]["lr"]
            phi = list(self.weight_net.parameters())
            if self.reweight.meta_scope == "full" and self.reweight.meta_gradient == "jvp":
                meta = jvp_meta_gradient(*args, lr=lr, normalize=self.reweight.normalize)
                grads = meta.grads
            else:
                meta = virtual_meta_loss(
                    *args, lr=lr, normalize=self.reweight.normalize, scope=self.reweight.meta_scope
                )
                # retain_graph: the real step below backpropagates through the same training pass.
                grads = torch.autograd.grad(meta.meta_loss, phi, retain_graph=True)
            for parameter, grad in zip(phi, grads, strict=True):
                parameter.grad = grad
            self.weight_optimizer.step()
            losses, features = meta.losses, meta.features
        else:
            layer = spec.feature_layer if spec.uses_features else None
            logits, features = weight_inputs_forward(self.model, x, layer)
            losses = self.loss.per_sample(logits, y)
            features = None if features is None else features.detach()
        with torch.no_grad():
            weights = self.weight_net(loss=losses.detach(), features=features, labels=labels)
        loss = weighted_loss(weights, losses, self.reweight.normalize)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if step >= self._record_from:
            cpu_index = index.cpu()
            self.recorded_weights[cpu_index] = weights.detach().float().cpu()
            self.recorded_losses[cpu_index] = losses.detach().float().cpu()
        return loss.detach()

    def _meta_batch(self, step: int) -> tuple[Tensor, Tensor]:
        # A function of (seed, step) so that a resumed run draws the same meta batches.
        size = min(self.reweight.meta_batch_size or self.settings.batch_size, len(self.val_labels))
        state = np.random.SeedSequence([self.seed, step, 0x3E7A]).generate_state(1)[0]
        generator = torch.Generator().manual_seed(int(state))
        index = torch.randperm(len(self.val_labels), generator=generator)[:size].to(self.device)
        return self.normalize(self.val_images[index]), self.val_labels[index]

    def extra_state(self) -> dict[str, Any]:
        return {
            "weight_net": self.weight_net.state_dict(),
            "weight_optimizer": self.weight_optimizer.state_dict(),
            "recorded_weights": self.recorded_weights,
            "recorded_losses": self.recorded_losses,
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.weight_net.load_state_dict(state["weight_net"])
        self.weight_optimizer.load_state_dict(state["weight_optimizer"])
        self.recorded_weights = state["recorded_weights"].cpu()
        self.recorded_losses = state["recorded_losses"].cpu()

    # -- results -------------------------------------------------------------------------------

    def weight_curve(self, losses: np.ndarray) -> dict[str, Any]:
        """V as a function of the loss on ``losses`` (G,), for a V that reads only the loss.

        Returns ``{"loss": (G,), "weight": (G,)}`` and, when class-aware, ``"per_class"``: (K, G)
        (``"weight"`` is then the mean over classes). Empty dict when V reads features.
        """
        spec = self.weight_net.spec
        if spec.uses_features:
            return {}
        grid = torch.as_tensor(losses, dtype=torch.float32, device=self.device)
        with torch.no_grad():
            if spec.class_embedding:
                k = self.weight_net.num_classes
                per_class = torch.stack(
                    [
                        self.weight_net(
                            loss=grid, labels=torch.full_like(grid, c, dtype=torch.int64)
                        )
                        for c in range(k)
                    ]
                ).cpu()
                return {
                    "loss": grid.cpu().tolist(),
                    "weight": per_class.mean(0).tolist(),
                    "per_class": per_class.tolist(),
                }
            return {
                "loss": grid.cpu().tolist(),
                "weight": self.weight_net(loss=grid).cpu().tolist(),
            }

    def extra_metrics(self, train: LabeledImages) -> dict[str, Any]:
        """Weights of the last epoch: clean vs noisy means, noise ROC-AUC, weight vs loss curves.

        Keys: ``spec``, ``meta_interval``, ``meta_scope``, ``recorded_fraction``,
        ``mean_weight``, ``mean_weight_per_class`` (by observed label), ``mean_weight_clean``,
        ``mean_weight_noisy``, ``noise_auc`` (clean = positive; NaN-free: None when undefined),
        ``weight_vs_loss`` (V on a loss grid, when V reads only the loss) and
        ``binned_weight_vs_loss`` (mean recorded weight per loss bin). With ``run_dir`` set, the
        recorded weights go to ``sample_weights.npz`` and, with ``reweight.plots``, the plots of
        :mod:`autorobust.report.reweight` are drawn there.
        """
        weights = self.recorded_weights.numpy().astype(np.float64)
        losses = self.recorded_losses.numpy().astype(np.float64)
        seen = np.isfinite(weights)
        labels = np.asarray(train.labels)
        noise_mask = getattr(train, "noise_mask", None)
        result: dict[str, Any] = {
            "spec": self.weight_net.spec.to_dict(),
            "spec_name": self.weight_net.spec.describe(),
            "meta_interval": self.reweight.meta_interval,
            "meta_scope": self.reweight.meta_scope,
            "recorded_fraction": float(seen.mean()) if len(seen) else 0.0,
        }
        if not seen.any():
            return result
        w, ell, lab = weights[seen], losses[seen], labels[seen]
        result["mean_weight"] = float(w.mean())
        num_classes = int(getattr(self.model, "num_classes", labels.max() + 1))
        result["mean_weight_per_class"] = [
            float(w[lab == c].mean()) if (lab == c).any() else None for c in range(num_classes)
        ]
        if noise_mask is not None:
            noisy = np.asarray(noise_mask)[seen]
            result["mean_weight_clean"] = float(w[~noisy].mean()) if (~noisy).any() else None
            result["mean_weight_noisy"] = float(w[noisy].mean()) if noisy.any() else None
            auc = roc_auc(w, ~noisy)
            result["noise_auc"] = None if math.isnan(auc) else auc
        top = float(np.quantile(ell, 0.99)) if len(ell) else 1.0
        grid = np.linspace(0.0, max(top, 1e-3), _CURVE_POINTS)
        result["weight_vs_loss"] = self.weight_curve(grid)
        edges = np.linspace(0.0, max(top, 1e-3), 21)
        bins = np.clip(np.digitize(ell, edges) - 1, 0, len(edges) - 2)
        result["binned_weight_vs_loss"] = {
            "loss": ((edges[:-1] + edges[1:]) / 2).tolist(),
            "weight": [
                float(w[bins == b].mean()) if (bins == b).any() else None for b in range(20)
            ],
        }
        if self.run_dir is not None:
            self._write_outputs(train, result)
        return result

    def _write_outputs(self, train: LabeledImages, result: dict[str, Any]) -> None:
        from pathlib import Path

        from autorobust._io import atomic_write

        run_dir = Path(self.run_dir)
        noise_mask = getattr(train, "noise_mask", None)
        arrays = {
            "weights": self.recorded_weights.numpy(),
            "losses": self.recorded_losses.numpy(),
            "labels": np.asarray(train.labels),
        }
        if noise_mask is not None:
            arrays["noise_mask"] = np.asarray(noise_mask)
        atomic_write(run_dir / SAMPLE_WEIGHTS_NAME, lambda handle: np.savez(handle, **arrays))
        if self.reweight.plots:
            from autorobust.report.reweight import reweight_plots

            reweight_plots(run_dir, result, arrays)


@register_trainer("reweight")
def build_reweighting_trainer(
    config: Any, splits: Any, **trainer_kwargs: Any
) -> ReweightingTrainer:
    """Build V from ``config.reweight`` for ``trainer_kwargs["model"]``; V's init is seeded."""
    model = trainer_kwargs["model"]
    spec = config.reweight.spec()
    feature_dim = None
    if spec.uses_features:
        try:
            model.check_layers([spec.feature_layer])
        except UnknownNameError as exc:
            raise UnknownNameError(f"reweight.feature_layer: {exc}") from None
        except AttributeError:
            raise ConfigError(
                f"reweight.input: {spec.input!r} needs a Classifier with intermediate layers, "
                f"got {type(model).__name__}"
            ) from None
        feature_dim = model.intermediate_dims[spec.feature_layer]
    if config.reweight.meta_scope == "head" and not isinstance(
        getattr(model, "head", None), nn.Module
    ):
        raise ConfigError(
            f"reweight.meta_scope: 'head' needs a model with a submodule 'head', got "
            f"{type(model).__name__}"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed + 1)
        weight_net = MetaWeightNet(spec, feature_dim=feature_dim, num_classes=splits.num_classes)
    return ReweightingTrainer(weight_net=weight_net, reweight=config.reweight, **trainer_kwargs)
