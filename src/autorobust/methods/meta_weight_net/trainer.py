"""``method: reweight``: the classifier trained by Meta-Weight-Net's meta step (Shu et al. 2019).

Every training step is the meta step of :mod:`autorobust.methods.meta_weight_net.meta_step` (or,
with ``meta_interval`` > 1, a weighted step with the last V between meta steps). During the last
epoch the trainer records each training sample's weight and loss, for the noise AUC, the plots
and ``sample_weights.npz``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from autorobust.errors import ConfigError, UnknownNameError
from autorobust.methods.meta_weight_net.config import ReweightConfig
from autorobust.methods.meta_weight_net.meta_step import (
    MetaGradient,
    VirtualStep,
    jvp_meta_gradient,
    virtual_meta_loss,
    weight_inputs_forward,
    weighted_loss,
)
from autorobust.methods.meta_weight_net.network import MetaWeightNet, MetaWeightNetSpec
from autorobust.train.metrics import roc_auc
from autorobust.train.registry import register_trainer
from autorobust.train.trainer import LabeledImages, Trainer

__all__ = ["SAMPLE_WEIGHTS_NAME", "ReweightingTrainer", "build_reweighting_trainer"]

SAMPLE_WEIGHTS_NAME = "sample_weights.npz"
_CURVE_POINTS = 50


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
            meta: MetaGradient | VirtualStep
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
            recorded_weights, recorded_losses = self._recorded()
            cpu_index = index.cpu()
            recorded_weights[cpu_index] = weights.detach().float().cpu()
            recorded_losses[cpu_index] = losses.detach().float().cpu()
        return loss.detach()

    def _meta_batch(self, step: int) -> tuple[Tensor, Tensor]:
        # A function of (seed, step) so that a resumed run draws the same meta batches.
        size = min(self.reweight.meta_batch_size or self.settings.batch_size, len(self.val_labels))
        state = np.random.SeedSequence([self.seed, step, 0x3E7A]).generate_state(1)[0]
        generator = torch.Generator().manual_seed(int(state))
        index = torch.randperm(len(self.val_labels), generator=generator)[:size].to(self.device)
        return self.normalize(self.val_images[index]), self.val_labels[index]

    def _recorded(self) -> tuple[Tensor, Tensor]:
        """The last epoch's weights and losses float32 (N,) (NaN: not recorded), made by
        :meth:`on_fit_start`."""
        if self.recorded_weights is None or self.recorded_losses is None:
            raise RuntimeError("ReweightingTrainer: no recorded weights before fit() starts")
        return self.recorded_weights, self.recorded_losses

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
                # MetaWeightNet refuses a class embedding without num_classes
                k = cast(int, self.weight_net.num_classes)
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
        :mod:`autorobust.methods.meta_weight_net.report` are drawn there.
        """
        recorded_weights, recorded_losses = self._recorded()
        weights = recorded_weights.numpy().astype(np.float64)
        losses = recorded_losses.numpy().astype(np.float64)
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
            self._write_outputs(self.run_dir, train, result)
        return result

    def _write_outputs(self, run_dir: Path, train: LabeledImages, result: dict[str, Any]) -> None:
        from autorobust._io import atomic_write

        run_dir = Path(run_dir)
        recorded_weights, recorded_losses = self._recorded()
        noise_mask = getattr(train, "noise_mask", None)
        arrays = {
            "weights": recorded_weights.numpy(),
            "losses": recorded_losses.numpy(),
            "labels": np.asarray(train.labels),
        }
        if noise_mask is not None:
            arrays["noise_mask"] = np.asarray(noise_mask)
        atomic_write(
            run_dir / SAMPLE_WEIGHTS_NAME,
            lambda handle: np.savez(handle, allow_pickle=False, **arrays),
        )
        if self.reweight.plots:
            from autorobust.methods.meta_weight_net.report import reweight_plots

            reweight_plots(run_dir, result, arrays)


@register_trainer("reweight")
def build_reweighting_trainer(
    config: Any, splits: Any, **trainer_kwargs: Any
) -> ReweightingTrainer:
    """Build V from ``config.reweight`` for ``trainer_kwargs["model"]``; V's init is seeded."""
    model = trainer_kwargs["model"]
    spec = MetaWeightNetSpec.from_config(config.reweight)
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
