"""``method: autobalance``: AutoBalance's bilevel trainer (Li et al., NeurIPS 2021).

Lower level: w*(α) = argmin_w L_train(w, α) + (λ/2)‖w‖² with the parametric loss ℓ_α
(:class:`~autorobust.methods.autobalance.loss.ParametricLoss`). Upper level: min_α L_val(w*(α))
with an objective of :mod:`~autorobust.methods.autobalance.objectives`, followed by the
hypergradients of :mod:`~autorobust.methods.autobalance.hypergradient`. The two levels' data
come from :mod:`~autorobust.methods.autobalance.split`. The parametric loss is evaluated with
:func:`torch.func.functional_call`, so its formula is written once, in the loss.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from autorobust.data.base import ImageDataset
from autorobust.errors import AutorobustError, ConfigError, DataError
from autorobust.methods.autobalance.config import BilevelConfig
from autorobust.methods.autobalance.hypergradient import (
    HypergradientResult,
    implicit_hypergradient,
    tensor_norm,
    unrolled_hypergradient,
)
from autorobust.methods.autobalance.loss import ParametricLoss
from autorobust.methods.autobalance.objectives import validation_objective
from autorobust.methods.autobalance.split import split_for_bilevel
from autorobust.models.base import Classifier
from autorobust.train.registry import register_trainer
from autorobust.train.trainer import LabeledImages, Trainer, TrainResult

__all__ = [
    "BilevelTrainer",
    "HyperProblem",
    "bilevel_loss",
    "build_bilevel_trainer",
    "solver_options",
]


_log = logging.getLogger(__name__)


def solver_options(bilevel: BilevelConfig) -> dict[str, Any]:
    """The keyword arguments of :func:`implicit_hypergradient` that ``bilevel`` sets (solver,
    series length and tolerance, η and its guards, CG's budget, damping)."""
    return {
        "solver": bilevel.hypergradient,
        "terms": bilevel.neumann_terms,
        "neumann_tol": bilevel.neumann_tol,
        "eta": bilevel.eta,
        "eta_scale": bilevel.eta_scale,
        "eta_halvings": bilevel.eta_halvings,
        "power_iterations": bilevel.power_iterations,
        "cg_iterations": bilevel.cg_iterations,
        "cg_tol": bilevel.cg_tol,
        "damping": bilevel.damping,
    }


@dataclass
class HyperProblem:
    """The bilevel problem of one upper step, as closures over the sampled batches.

    Attributes:
        train_loss: (w, α) ↦ mean parametric loss on the training batches + (λ/2)‖w‖².
        val_loss: w ↦ the validation objective on the validation batches.
        params: w, the lower-level weights differentiated through (the head's, or all).
        alpha: α, the learned raw loss parameters (the loss's own tensors, in ``alpha_names``
            order).
        alpha_names: names of the learned raw parameters (``raw_scale``, ``raw_offset``,
            ``raw_weight``).
        generator: the step's CPU generator (it drew the batches; it seeds the power iteration).
    """

    train_loss: Callable[[Sequence[Tensor], Sequence[Tensor]], Tensor]
    val_loss: Callable[[Sequence[Tensor]], Tensor]
    params: list[Tensor]
    alpha: list[Tensor]
    alpha_names: list[str]
    generator: torch.Generator


class BilevelTrainer(Trainer):
    """Trains the classifier on the parametric loss while the upper level learns the loss.

    Epochs < ``warmup_epochs`` use plain CE; afterwards every ``upper_every`` steps (until
    ``upper_end_fraction`` of the epochs) one upper step: a hypergradient of the validation
    objective averaged over ``hyper_train_batches`` training and ``hyper_val_batches``
    validation batches (no augmentation; batch-norm in eval mode so the Hessian is of a fixed
    function), clipped to ``upper_clip``, then an Adam/SGD step on the learned raw parameters,
    which are then clipped to their bounds (learned offsets are also centred: a common shift of ι
    changes nothing). Parameters that are not learned are never changed. A step whose
    hypergradient the solver cannot vouch for (negative curvature) is skipped: no optimiser step,
    the reason in ``hyper_log``. The ``val`` passed to :meth:`fit` is the upper level's
    validation data.

    Args:
        bilevel: the AutoBalance settings.
        train_data, val_data: the lower level's training data and the upper level's validation
            data (:func:`~autorobust.methods.autobalance.split.split_for_bilevel`); their
            ``groups`` feed the group-sensitive loss and the fairness objective.
        **kwargs: those of :class:`Trainer`; ``loss`` must be a :class:`ParametricLoss`.
    """

    loss: ParametricLoss

    def __init__(
        self,
        *,
        bilevel: BilevelConfig,
        train_data: ImageDataset,
        val_data: ImageDataset,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(self.loss, ParametricLoss):
            raise ConfigError("the bilevel trainer needs loss 'parametric'")
        self.bilevel = bilevel
        self.train_data, self.val_data = train_data, val_data
        learned = [
            param
            for flag, param in (
                (bilevel.learn_scale, self.loss.raw_scale),
                (bilevel.learn_offset, self.loss.raw_offset),
                (bilevel.learn_weight, self.loss.raw_weight),
            )
            if flag
        ]
        self.hyper_parameters = learned
        if bilevel.upper_optimizer == "adam":
            self.upper_optimizer: torch.optim.Optimizer = torch.optim.Adam(
                learned, lr=bilevel.upper_lr, weight_decay=bilevel.upper_weight_decay
            )
        else:
            self.upper_optimizer = torch.optim.SGD(
                learned,
                lr=bilevel.upper_lr,
                momentum=bilevel.upper_momentum,
                weight_decay=bilevel.upper_weight_decay,
            )
        self.hyper_log: list[dict[str, Any]] = []

    # -- hooks -----------------------------------------------------------------------------------

    def on_fit_start(self) -> None:
        """Group tensors, class weights of the validation objective, steps per epoch."""
        k = self.loss.num_classes
        self.steps_per_epoch = math.ceil(len(self.train_labels) / self.settings.batch_size)
        counts = torch.bincount(self.val_labels, minlength=k).double()
        self.val_class_weights = torch.where(counts > 0, 1.0 / counts.clamp(min=1), 0.0)
        self.train_group_tensor = self._groups_tensor(
            self.train_data.groups, len(self.train_labels)
        )
        self.val_group_tensor = self._groups_tensor(self.val_data.groups, len(self.val_labels))
        if self.loss.num_attributes > 1 and self.train_group_tensor is None:
            raise DataError("bilevel.group_sensitive needs group attributes of the training pool")
        if self.bilevel.objective == "fairness" and self.val_group_tensor is None:
            raise DataError("bilevel.objective 'fairness' needs group attributes in the data")

    def _groups_tensor(self, groups: np.ndarray | Tensor | None, n: int) -> Tensor | None:
        if groups is None:
            return None
        if len(groups) != n:
            raise ValueError(f"expected {n} group attributes, got {len(groups)}")
        # torch.as_tensor, not np.asarray: the attributes may already be a tensor on an
        # accelerator, which numpy cannot read.
        return torch.as_tensor(groups, dtype=torch.int64, device=self.device)

    def fit_data(self, splits: Any) -> tuple[LabeledImages, LabeledImages]:
        """The lower level's training data and the upper level's validation data."""
        return self.train_data, self.val_data

    def training_step(self, x: Tensor, y: Tensor, index: Tensor, step: int) -> Tensor:
        """CE during warm-up; afterwards the parametric loss, with an upper step every k steps."""
        epoch = step // self.steps_per_epoch
        upper_active = epoch >= self.bilevel.warmup_epochs
        end = self.bilevel.upper_end_fraction * self.settings.epochs * self.steps_per_epoch
        if upper_active and step < end and step % self.bilevel.upper_every == 0:
            self.upper_step(step)
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.model(x)
        if upper_active:
            loss = self._lower_loss(logits, y, self._train_groups(index))
        else:
            loss = F.cross_entropy(logits, y)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def _train_groups(self, index: Tensor) -> Tensor | None:
        """The group attributes int64 (B,) of the training samples at ``index`` in
        group-sensitive mode (the loss rows follow them), else None."""
        if self.loss.num_attributes == 1:
            return None
        if self.train_group_tensor is None:  # on_fit_start refuses this already
            raise DataError("bilevel.group_sensitive needs group attributes of the training pool")
        return self.train_group_tensor[index]

    def _lower_loss(self, logits: Tensor, y: Tensor, groups: Tensor | None) -> Tensor:
        # Detached parameter values: the lower step must not build a graph into α.
        return self._parametric_loss(logits, y, groups, {})

    def _parametric_loss(
        self, logits: Tensor, y: Tensor, groups: Tensor | None, values: dict[str, Tensor]
    ) -> Tensor:
        """The loss's mean over the batch, with the raw parameters in ``values`` replacing its own
        (the others detached): the one formula, evaluated functionally."""
        parameters = {name: p.detach() for name, p in self.loss.named_parameters()}
        return functional_call(self.loss, {**parameters, **values}, (logits, y, groups))

    # -- the upper step --------------------------------------------------------------------------

    def _sample(self, n: int, batches: int, generator: torch.Generator) -> Tensor:
        size = min(n, batches * self.settings.batch_size)
        return torch.randperm(n, generator=generator)[:size].to(self.device)

    @contextmanager
    def hyper_problem(self, step: int) -> Iterator[HyperProblem]:
        """The bilevel problem of the upper step at ``step`` (batches drawn from a generator
        seeded by the run's seed and ``step``, so the same step gives the same problem); the
        model is in eval mode while the context is open."""
        cfg, loss = self.bilevel, self.loss
        generator = torch.Generator().manual_seed(
            int(np.random.SeedSequence([self.seed, step, 7]).generate_state(1)[0])
        )
        train_idx = self._sample(len(self.train_labels), cfg.hyper_train_batches, generator)
        val_idx = self._sample(len(self.val_labels), cfg.hyper_val_batches, generator)
        x_tr = self.normalize(self.train_images[train_idx])
        y_tr = self.train_labels[train_idx]
        x_va = self.normalize(self.val_images[val_idx])
        y_va = self.val_labels[val_idx]
        g_tr = self._train_groups(train_idx)
        g_va = None if self.val_group_tensor is None else self.val_group_tensor[val_idx]
        wd = self.settings.weight_decay
        alpha_names = [
            name
            for flag, name in (
                (cfg.learn_scale, "raw_scale"),
                (cfg.learn_offset, "raw_offset"),
                (cfg.learn_weight, "raw_weight"),
            )
            if flag
        ]
        was_training = self.model.training
        self.model.eval()
        try:
            params: list[Tensor]
            if cfg.hyper_params == "head":
                # The model is a Classifier (build_model's); the head is its nn.Linear.
                classifier = cast(Classifier, self.model)
                with torch.no_grad():
                    f_tr = classifier.forward_features(x_tr)
                    f_va = classifier.forward_features(x_va)
                head = classifier.head
                params = [head.weight, head.bias]

                def logits_tr(w: Sequence[Tensor]) -> Tensor:
                    return F.linear(f_tr, w[0], w[1])

                def logits_va(w: Sequence[Tensor]) -> Tensor:
                    return F.linear(f_va, w[0], w[1])
            else:
                names = [n for n, _ in self.model.named_parameters()]
                params = [p for _, p in self.model.named_parameters()]
                buffers = dict(self.model.named_buffers())

                def call(w: Sequence[Tensor], x: Tensor) -> Tensor:
                    return functional_call(
                        self.model, ({**dict(zip(names, w, strict=True)), **buffers},), (x,)
                    )

                def logits_tr(w: Sequence[Tensor]) -> Tensor:
                    return call(w, x_tr)

                def logits_va(w: Sequence[Tensor]) -> Tensor:
                    return call(w, x_va)

            def train_loss(w: Sequence[Tensor], a: Sequence[Tensor]) -> Tensor:
                values = dict(zip(alpha_names, a, strict=True))
                z = logits_tr(w)
                ce = self._parametric_loss(z, y_tr, g_tr, values)
                return ce + 0.5 * wd * sum((p * p).sum() for p in w)

            def val_loss(w: Sequence[Tensor]) -> Tensor:
                return validation_objective(
                    logits_va(w),
                    y_va,
                    kind=cfg.objective,
                    class_weights=self.val_class_weights,
                    groups=g_va,
                    temperature=cfg.worst_class_temperature,
                    fairness_weight=cfg.fairness_weight,
                )

            alpha = [getattr(loss, name) for name in alpha_names]
            yield HyperProblem(train_loss, val_loss, params, alpha, alpha_names, generator)
        finally:
            self.model.train(was_training)

    def hypergradient(self, problem: HyperProblem) -> HypergradientResult:
        """The configured hypergradient of ``problem`` (with the solver guards)."""
        cfg = self.bilevel
        if cfg.hypergradient == "unrolled":
            lr = self.optimizer.param_groups[0]["lr"]
            return unrolled_hypergradient(
                problem.train_loss, problem.val_loss, problem.params, problem.alpha, lr=lr
            )
        return implicit_hypergradient(
            problem.train_loss,
            problem.val_loss,
            problem.params,
            problem.alpha,
            **solver_options(cfg),
            generator=problem.generator,
        )

    def upper_step(self, step: int) -> HypergradientResult:
        """One hypergradient step on the learned loss parameters, or none when the hypergradient
        was skipped (``result.skipped``); appends its diagnostics to the log."""
        with self.hyper_problem(step) as problem:
            result = self.hypergradient(problem)
        norm = tensor_norm(result.grads)
        if result.skipped is None:
            clip = min(1.0, self.bilevel.upper_clip / norm) if 0 < norm < math.inf else 0.0
            self.upper_optimizer.zero_grad(set_to_none=True)
            for param, grad in zip(problem.alpha, result.grads, strict=True):
                param.grad = torch.nan_to_num(grad * clip, nan=0.0, posinf=0.0, neginf=0.0)
            self.upper_optimizer.step()
            self._project()
        else:
            # No step at all: Adam's momentum would otherwise move α without a hypergradient.
            clip = 0.0
        entry = {
            "step": step,
            "epoch": step // self.steps_per_epoch,
            **result.log(),
            "clip_factor": clip,
        }
        self.hyper_log.append(entry)
        where = f"autobalance: upper step at step {step} (epoch {entry['epoch']})"
        if result.skipped is not None:
            _log.warning("%s skipped: %s", where, result.skipped)
        elif result.events:
            _log.warning("%s guarded: %s", where, "; ".join(result.events))
        return result

    def fit(self, train: LabeledImages, val: LabeledImages, *, resume: bool = False) -> TrainResult:
        """:meth:`Trainer.fit`, then one line on the upper steps the guards skipped or changed.

        Raises:
            AutorobustError: more than half of the upper steps were skipped: the learned loss
                was hardly trained, and the run would pass for an AutoBalance result.
        """
        result = super().fit(train, val, resume=resume)
        total = len(self.hyper_log)
        skipped = sum(1 for e in self.hyper_log if e.get("skipped"))
        guarded = sum(1 for e in self.hyper_log if e.get("events") and not e.get("skipped"))
        if skipped or guarded:
            _log.warning(
                "autobalance: %d of %d upper steps skipped, %d guarded (eta damped or halved, "
                "a fallback to cg, an indefinite H); hyper_log in metrics.json has the reasons",
                skipped,
                total,
                guarded,
            )
        if 2 * skipped > total:
            # Through the last layer alone the parametric CE is convex; what is left to change
            # there is the damping (forward correction, bilevel.transition, is not convex).
            remedy = (
                "bilevel.damping > 0 (e.g. 10) or bilevel.hyper_params: head"
                if self.bilevel.hyper_params == "all"
                else "bilevel.damping above the size of the negative curvature the skips report"
            )
            raise AutorobustError(
                f"autobalance: {skipped} of {total} upper steps were skipped (the Hessian of "
                "the lower problem is not positive definite), so the learned loss was hardly "
                f"trained; set {remedy}"
            )
        return result

    @torch.no_grad()
    def _project(self) -> None:
        """Centre and clip the learned raw parameters; the others keep their values (a CDT or
        logit-adjustment start that is not learned stays exactly as configured)."""
        cfg, loss = self.bilevel, self.loss
        if cfg.learn_offset:
            loss.raw_offset.sub_(loss.raw_offset.mean(dim=1, keepdim=True))
            loss.raw_offset.clamp_(-cfg.offset_bound, cfg.offset_bound)
        if cfg.learn_scale:
            if loss.scale_parameterisation == "exp":
                # A common factor of Δ is a temperature of the raw logits, which the upper
                # objective (measured on the raw logits) would exploit for calibration rather
                # than balance: fix the geometric mean of Δ to 1.
                loss.raw_scale.sub_(loss.raw_scale.mean(dim=1, keepdim=True))
            loss.raw_scale.clamp_(-cfg.log_scale_bound, cfg.log_scale_bound)
        if cfg.learn_weight:
            # Mean log-weight 0 keeps the loss (hence the effective learning rate) on CE's scale.
            loss.raw_weight.sub_(loss.raw_weight.mean(dim=1, keepdim=True))
            loss.raw_weight.clamp_(-cfg.log_weight_bound, cfg.log_weight_bound)

    # -- results and checkpoints -----------------------------------------------------------------

    def extra_metrics(self, train: LabeledImages) -> dict[str, Any]:
        """The learned per-class parameters, a summary of the upper steps and their log."""
        lambdas = [e["lambda_max"] for e in self.hyper_log if e["lambda_max"] is not None]
        skipped = [e for e in self.hyper_log if e.get("skipped")]
        return {
            "learned_loss": self.loss.class_parameters(),
            "upper_steps": len(self.hyper_log) - len(skipped),
            "skipped_steps": len(skipped),
            "lambda_max_first_last": [lambdas[0], lambdas[-1]] if lambdas else None,
            # Steps whose Neumann terms grew at some point (the guards then halved η, fell back
            # to CG or skipped), and steps where a guard acted at all.
            "neumann_diverging_steps": sum(
                1 for e in self.hyper_log if e.get("neumann_growths", 0) > 0
            ),
            "guarded_steps": sum(1 for e in self.hyper_log if e.get("events") or e.get("skipped")),
            "clipped_steps": sum(
                1 for e in self.hyper_log if not e.get("skipped") and e["clip_factor"] < 1.0
            ),
            "hvps_per_step": float(np.mean([e.get("hvps", 0) for e in self.hyper_log]))
            if self.hyper_log
            else None,
            "bilevel_train_class_counts": np.bincount(
                self.train_data.labels, minlength=self.loss.num_classes
            ).tolist(),
            "hyper_log": self.hyper_log,
        }

    def extra_state(self) -> dict[str, Any]:
        """Loss parameters, the upper optimiser and the log, for an exact resume."""
        return {
            "loss": self.loss.state_dict(),
            "upper_optimizer": self.upper_optimizer.state_dict(),
            "hyper_log": self.hyper_log,
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`extra_state`."""
        self.loss.load_state_dict(state["loss"])
        self.upper_optimizer.load_state_dict(state["upper_optimizer"])
        self.hyper_log = list(state["hyper_log"])


def bilevel_loss(
    bilevel: BilevelConfig, class_counts: np.ndarray, *, num_attributes: int = 1
) -> ParametricLoss:
    """The parametric loss at the configured initial point (CE or logit adjustment, at the
    observed prior or ``init_prior_counts``), forward-corrected by ``bilevel.transition`` if given,
    with parameters per (attribute, class) when ``num_attributes > 1`` (group-sensitive mode).

    Args:
        bilevel: the ``bilevel`` config section (initial point, parameterisation, groups).
        class_counts: int (K,) images per class of the lower level's training data.
        num_attributes: A, values of the group attribute (1: not group-sensitive).

    Raises:
        ConfigError: ``bilevel.transition`` or ``bilevel.init_prior_counts`` do not fit the data
            (named, e.g. ``bilevel: loss 'parametric': transition must be 10 x 10 ...``).
    """
    try:
        return ParametricLoss(
            class_counts=class_counts,
            init=bilevel.init,
            tau=bilevel.init_tau,
            cdt_gamma=bilevel.init_cdt_gamma,
            scale_parameterisation=bilevel.scale_parameterisation,
            group_size=bilevel.group_size,
            class_groups=bilevel.class_groups,
            num_attributes=num_attributes,
            transition=bilevel.transition,
            prior_counts=bilevel.init_prior_counts,
        )
    except ConfigError as exc:
        raise ConfigError(f"bilevel: {exc}") from None


@register_trainer("autobalance")
def build_bilevel_trainer(config: Any, splits: Any, **trainer_kwargs: Any) -> BilevelTrainer:
    """The bilevel trainer of ``config.bilevel`` on ``splits``: the pool split into the two
    levels' data, and the parametric loss at its initial point (it replaces ``config.loss``).

    Raises:
        AutorobustError: the split leaves a class without training images.
        ConfigError: ``bilevel.group_sensitive`` on data without group attributes.
    """
    bilevel: BilevelConfig = config.bilevel
    train_part, val_part = split_for_bilevel(config, splits)
    counts = np.bincount(train_part.labels, minlength=splits.num_classes)
    if counts.min() == 0:
        raise AutorobustError(
            f"bilevel split leaves class {int(counts.argmin())} without training images; "
            "lower bilevel.val_fraction"
        )
    num_attributes = 1
    if bilevel.group_sensitive:
        if train_part.groups is None or val_part.groups is None:
            raise ConfigError(
                "bilevel.group_sensitive: the data source provides no group attributes"
            )
        num_attributes = int(max(train_part.groups.max(), val_part.groups.max())) + 1
    trainer_kwargs["loss"] = bilevel_loss(bilevel, counts, num_attributes=num_attributes)
    return BilevelTrainer(
        bilevel=bilevel, train_data=train_part, val_data=val_part, **trainer_kwargs
    )
