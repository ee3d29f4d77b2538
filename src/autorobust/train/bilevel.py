"""AutoBalance's bilevel trainer and its hypergradients (Li et al., NeurIPS 2021; METHODS.md §3).

Lower level: w*(α) = argmin_w L_train(w, α) + (λ/2)‖w‖² with the parametric loss ℓ_α. Upper level:
min_α L_val(w*(α)). By the implicit function theorem

    dL_val/dα = −(∂²L_train/∂α∂w) · H⁻¹ g,   H = ∇²_w L_train (+ λI),   g = ∇_w L_val,

and v = H⁻¹ g is approximated by the Neumann series v ≈ η Σ_{j=0}^{J} (I − ηH)^j g (authors' code),
by conjugate gradients, or solved exactly for small problems. The series converges only when every
eigenvalue of ηH lies in (0, 2): the authors' η = 1 diverged on this project's protocol, so η
defaults to ``eta_scale / λ_max`` with λ_max estimated by power iteration on the same
Hessian-vector product, the norms of the series' terms are logged, and the upper step is clipped.
The one-step unrolled alternative differentiates L_val(w − lr ∇_w L_train(w, α)) with torch.func.

The functions here take closures over lists of tensors, so the same code serves the classifier
(``hyper_params: head`` differentiates through the last linear layer on fixed features, ``all``
through every parameter) and the tests' multinomial logistic regression with known optimum.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from autorobust.config import BilevelConfig
from autorobust.errors import ConfigError, DataError
from autorobust.losses.parametric import ParametricLoss
from autorobust.train.trainer import LabeledImages, Trainer

__all__ = [
    "BilevelTrainer",
    "HypergradientResult",
    "conjugate_gradient",
    "equal_opportunity_gap",
    "fairness_metrics",
    "hessian_vector_product",
    "implicit_hypergradient",
    "lambda_max",
    "neumann_inverse_hvp",
    "split_pool",
    "unrolled_hypergradient",
    "validation_objective",
]

Tensors = list[Tensor]
HVP = Callable[[Sequence[Tensor]], Tensors]


def _dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    return sum((x * y).sum() for x, y in zip(a, b, strict=True))


def _norm(a: Sequence[Tensor]) -> float:
    return math.sqrt(float(_dot(a, a)))


# -- linear algebra on lists of tensors ---------------------------------------------------------


def hessian_vector_product(gradients: Sequence[Tensor], params: Sequence[Tensor]) -> HVP:
    """v ↦ H v by double backward through ``gradients`` = ∇_w L (built with create_graph=True).

    Args:
        gradients: ∇_w L as tensors shaped like ``params``, part of a differentiable graph.
        params: the tensors w (requires_grad) the gradients were taken with respect to.

    Returns:
        A function from a list of tensors shaped like ``params`` to H v (detached).
    """

    def hvp(vector: Sequence[Tensor]) -> Tensors:
        out = torch.autograd.grad(
            gradients, params, grad_outputs=list(vector), retain_graph=True, allow_unused=True
        )
        return [
            torch.zeros_like(p) if o is None else o.detach()
            for o, p in zip(out, params, strict=True)
        ]

    return hvp


def lambda_max(
    hvp: HVP,
    like: Sequence[Tensor],
    *,
    iterations: int = 20,
    generator: torch.Generator | None = None,
) -> float:
    """Largest |eigenvalue| of H by power iteration (float; 0.0 when H v vanishes).

    Args:
        hvp: v ↦ H v.
        like: tensors giving the shapes, dtype and device of v.
        iterations: power-iteration steps from a random (seeded) start.
        generator: CPU generator of the start vector.
    """
    vector = [torch.randn(t.shape, generator=generator, dtype=t.dtype).to(t.device) for t in like]
    norm = _norm(vector)
    vector = [v / norm for v in vector]
    estimate = 0.0
    for _ in range(iterations):
        hv = hvp(vector)
        estimate = abs(float(_dot(vector, hv)))  # Rayleigh quotient of a unit vector
        norm = _norm(hv)
        if norm == 0.0 or not math.isfinite(norm):
            return estimate if math.isfinite(estimate) else 0.0
        vector = [h / norm for h in hv]
    return max(estimate, _norm(hvp(vector)))


def neumann_inverse_hvp(
    hvp: HVP, g: Sequence[Tensor], *, eta: float, terms: int
) -> tuple[Tensors, list[float]]:
    """v ≈ H⁻¹ g = η Σ_{j=0}^{J} (I − ηH)^j g, and the norms ‖(I − ηH)^j g‖ for j = 0..J.

    Converges when every eigenvalue of ηH lies in (0, 2) (error ∝ max|1 − ηλ|^{J+1}); pick η below
    2/λ_max (:func:`lambda_max`). Rising term norms signal divergence.
    """
    term = [t.detach().clone() for t in g]
    total = [eta * t for t in term]
    norms = [_norm(term)]
    for _ in range(terms):
        hv = hvp(term)
        term = [t - eta * h for t, h in zip(term, hv, strict=True)]
        total = [s + eta * t for s, t in zip(total, term, strict=True)]
        norms.append(_norm(term))
    return total, norms


def conjugate_gradient(
    hvp: HVP, g: Sequence[Tensor], *, iterations: int, damping: float = 0.0, tol: float = 1e-10
) -> tuple[Tensors, list[float]]:
    """v ≈ (H + δI)⁻¹ g by conjugate gradients (H symmetric positive definite); residual norms."""
    x = [torch.zeros_like(t) for t in g]
    r = [t.detach().clone() for t in g]
    p = [t.clone() for t in r]
    rr = float(_dot(r, r))
    norms = [math.sqrt(rr)]
    for _ in range(iterations):
        if math.sqrt(rr) <= tol:
            break
        ap = [h + damping * q for h, q in zip(hvp(p), p, strict=True)]
        curvature = float(_dot(p, ap))
        if curvature <= 0.0:  # not positive definite along p: stop with what we have
            break
        step = rr / curvature
        x = [xi + step * pi for xi, pi in zip(x, p, strict=True)]
        r = [ri - step * api for ri, api in zip(r, ap, strict=True)]
        rr_new = float(_dot(r, r))
        p = [ri + (rr_new / rr) * pi for ri, pi in zip(r, p, strict=True)]
        rr = rr_new
        norms.append(math.sqrt(rr))
    return x, norms


def _exact_inverse_hvp(hvp: HVP, g: Sequence[Tensor], damping: float) -> Tensors:
    """H⁻¹ g from the dense Hessian (built column by column): for small problems and tests."""
    sizes = [t.numel() for t in g]
    n = sum(sizes)
    flat_g = torch.cat([t.reshape(-1) for t in g])
    columns = []
    for i in range(n):
        unit = torch.zeros(n, dtype=flat_g.dtype, device=flat_g.device)
        unit[i] = 1.0
        pieces = list(torch.split(unit, sizes))
        columns.append(
            torch.cat(
                [h.reshape(-1) for h in hvp([p.view_as(t) for p, t in zip(pieces, g, strict=True)])]
            )
        )
    hessian = torch.stack(columns, dim=1)
    hessian = 0.5 * (hessian + hessian.T) + damping * torch.eye(n, dtype=hessian.dtype)
    solution = torch.linalg.solve(hessian, flat_g)
    return [s.view_as(t) for s, t in zip(torch.split(solution, sizes), g, strict=True)]


@dataclass
class HypergradientResult:
    """One hypergradient and its diagnostics.

    Attributes:
        grads: dL_val/dα, tensors shaped like α.
        val_loss: L_val at the current w (float).
        lambda_max: the power-iteration estimate of H's largest eigenvalue (nan if not computed).
        eta: η used by the Neumann series (nan for other solvers).
        term_norms: ‖(I − ηH)^j g‖ (Neumann) or residual norms (CG), j = 0..J.
    """

    grads: Tensors
    val_loss: float
    lambda_max: float = float("nan")
    eta: float = float("nan")
    term_norms: list[float] = field(default_factory=list)

    def log(self) -> dict[str, Any]:
        """JSON-serialisable diagnostics (norms rounded)."""
        return {
            "val_loss": self.val_loss,
            # None rather than nan: strict JSON (learned_loss.json) has no nan.
            "lambda_max": self.lambda_max if math.isfinite(self.lambda_max) else None,
            "eta": self.eta if math.isfinite(self.eta) else None,
            "hypergrad_norm": _norm(self.grads) if math.isfinite(_norm(self.grads)) else None,
            "term_norms": [float(f"{n:.4g}") for n in self.term_norms],
        }


def implicit_hypergradient(
    train_loss: Callable[[Sequence[Tensor], Sequence[Tensor]], Tensor],
    val_loss: Callable[[Sequence[Tensor]], Tensor],
    params: Sequence[Tensor],
    alpha: Sequence[Tensor],
    *,
    solver: str = "neumann",
    terms: int = 5,
    eta: float | None = None,
    eta_scale: float = 1.0,
    power_iterations: int = 20,
    cg_iterations: int = 20,
    damping: float = 0.0,
    generator: torch.Generator | None = None,
) -> HypergradientResult:
    """dL_val(w*(α))/dα = −(∂²L_train/∂α∂w) H⁻¹ ∇_w L_val at w = ``params`` (assumed ≈ w*(α)).

    Args:
        train_loss: (w, α) ↦ lower objective (scalar), including any weight decay on w.
        val_loss: w ↦ upper objective (scalar); it does not depend on α directly.
        params: w (values; detached copies are differentiated).
        alpha: α (values).
        solver: "neumann", "cg" or "exact" (dense Hessian; small problems only).
        terms: J of the Neumann series.
        eta: fixed η; None: ``eta_scale / λ_max`` by power iteration.
        eta_scale: η·λ_max, in (0, 2).
        power_iterations: steps of :func:`lambda_max`.
        cg_iterations, damping: conjugate gradients on H + δI (δ also used by "exact").
        generator: seeds the power iteration's start vector.

    Returns:
        :class:`HypergradientResult`.
    """
    if solver not in ("neumann", "cg", "exact"):
        raise ValueError(f"solver must be 'neumann', 'cg' or 'exact', got {solver!r}")
    w = [p.detach().clone().requires_grad_(True) for p in params]
    a = [t.detach().clone().requires_grad_(True) for t in alpha]
    upper = val_loss(w)
    g = [t.detach() for t in torch.autograd.grad(upper, w, allow_unused=False)]
    gradients = torch.autograd.grad(train_loss(w, a), w, create_graph=True)
    hvp = hessian_vector_product(gradients, w)
    result = HypergradientResult(grads=[], val_loss=float(upper.detach()))
    if solver == "neumann":
        if eta is None:
            result.lambda_max = lambda_max(hvp, w, iterations=power_iterations, generator=generator)
            eta = eta_scale / max(result.lambda_max, 1e-12)
        result.eta = eta
        v, result.term_norms = neumann_inverse_hvp(hvp, g, eta=eta, terms=terms)
    elif solver == "cg":
        v, result.term_norms = conjugate_gradient(hvp, g, iterations=cg_iterations, damping=damping)
    else:
        v = _exact_inverse_hvp(hvp, g, damping)
    mixed = torch.autograd.grad(gradients, a, grad_outputs=v, allow_unused=True)
    result.grads = [
        torch.zeros_like(t) if m is None else -m.detach() for m, t in zip(mixed, a, strict=True)
    ]
    return result


def unrolled_hypergradient(
    train_loss: Callable[[Sequence[Tensor], Sequence[Tensor]], Tensor],
    val_loss: Callable[[Sequence[Tensor]], Tensor],
    params: Sequence[Tensor],
    alpha: Sequence[Tensor],
    *,
    lr: float,
    steps: int = 1,
) -> HypergradientResult:
    """d/dα L_val(w_k(α)), w_{i+1} = w_i − lr ∇_w L_train(w_i, α), w_0 = ``params`` (torch.func).

    ``steps = 1`` is the cheap one-step approximation of the hypergradient; more steps make it the
    exact gradient of the unrolled map (checked against finite differences in the tests). The
    closures must be pure functions of their tensor arguments.
    """
    from torch.func import grad, grad_and_value

    w0 = tuple(p.detach() for p in params)

    def upper(a: tuple[Tensor, ...]) -> Tensor:
        w = w0
        for _ in range(steps):
            step = grad(lambda ws: train_loss(list(ws), list(a)))(w)
            w = tuple(wi - lr * gi for wi, gi in zip(w, step, strict=True))
        return val_loss(list(w))

    grads, value = grad_and_value(upper)(tuple(t.detach() for t in alpha))
    return HypergradientResult(grads=[g.detach() for g in grads], val_loss=float(value))


# -- validation objectives and fairness ---------------------------------------------------------


def validation_objective(
    logits: Tensor,
    labels: Tensor,
    *,
    kind: str,
    class_weights: Tensor,
    groups: Tensor | None = None,
    temperature: float = 0.5,
    fairness_weight: float = 1.0,
) -> Tensor:
    """The upper-level loss on plain logits z (B, K) and labels int64 (B,); a scalar.

    - ``balanced_ce``: Σ_i c_{y_i} CE_i / Σ_i c_{y_i}, c ∝ 1/n_c (``class_weights`` (K,));
    - ``worst_class``: T · log Σ_c exp(L_c / T) over the per-class mean CE L_c of present classes
      (a smooth max; T → 0 is the worst class);
    - ``fairness``: balanced CE + λ · soft equal-opportunity gap between the values of ``groups``
      (see :func:`equal_opportunity_gap`, with the soft error 1 − p_y).
    """
    ce = F.cross_entropy(logits, labels, reduction="none")
    if kind == "balanced_ce":
        weights = class_weights.to(logits)[labels]
        return (weights * ce).sum() / weights.sum()
    num_classes = logits.shape[1]
    if kind == "worst_class":
        sums = torch.zeros(num_classes, dtype=ce.dtype, device=ce.device).index_add(0, labels, ce)
        counts = torch.bincount(labels, minlength=num_classes)
        present = counts > 0
        per_class = sums[present] / counts[present].to(ce)
        return temperature * torch.logsumexp(per_class / temperature, dim=0)
    if kind == "fairness":
        weights = class_weights.to(logits)[labels]
        balanced = (weights * ce).sum() / weights.sum()
        if groups is None:
            raise DataError("bilevel.objective 'fairness' needs group attributes in the data")
        soft_error = 1.0 - torch.softmax(logits, dim=1).gather(1, labels[:, None]).squeeze(1)
        return balanced + fairness_weight * equal_opportunity_gap(soft_error, labels, groups)
    raise ValueError(f"unknown validation objective {kind!r}")


def equal_opportunity_gap(errors: Tensor, labels: Tensor, groups: Tensor) -> Tensor:
    """Mean over classes of (max_a − min_a) of the group-wise mean error within the class.

    With 0/1 errors this is the equal-opportunity gap (difference of true-positive rates between
    groups, averaged over classes); with soft errors 1 − p_y it is its differentiable surrogate.
    Classes seen in fewer than two groups are skipped; no such class gives 0.
    """
    gaps = []
    for c in torch.unique(labels):
        in_class = labels == c
        rates = [errors[in_class & (groups == a)].mean() for a in torch.unique(groups[in_class])]
        if len(rates) >= 2:
            stacked = torch.stack(rates)
            gaps.append(stacked.max() - stacked.min())
    return torch.stack(gaps).mean() if gaps else errors.sum() * 0.0


def fairness_metrics(
    labels: np.ndarray, predictions: np.ndarray, groups: np.ndarray
) -> dict[str, Any]:
    """Equal-opportunity gap, worst-group accuracy and per-group accuracy (fractions in [0, 1]).

    Args:
        labels, predictions, groups: int (N,) true labels, predicted labels, group attributes.

    Returns:
        ``equal_opportunity_gap`` (mean over classes of the max − min recall across groups),
        ``worst_group_accuracy`` (minimum accuracy over the (group, class) cells present),
        ``group_accuracy`` {group: accuracy}.
    """
    labels, predictions, groups = (
        np.asarray(x, dtype=np.int64) for x in (labels, predictions, groups)
    )
    correct = labels == predictions
    gap = equal_opportunity_gap(
        torch.as_tensor(1.0 - correct, dtype=torch.float64),
        torch.as_tensor(labels),
        torch.as_tensor(groups),
    )
    cells = [
        correct[(labels == c) & (groups == a)].mean()
        for a in np.unique(groups)
        for c in np.unique(labels)
        if ((labels == c) & (groups == a)).any()
    ]
    return {
        "equal_opportunity_gap": float(gap),
        "worst_group_accuracy": float(min(cells)) if cells else None,
        "group_accuracy": {str(a): float(correct[groups == a].mean()) for a in np.unique(groups)},
    }


# -- the split ---------------------------------------------------------------------------------


def split_pool(
    labels: np.ndarray,
    num_classes: int,
    *,
    val_fraction: float,
    mode: str = "balanced",
    max_class_fraction: float = 0.5,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Split a training pool into (train, val) positions, both sorted int64 arrays.

    ``stratified``: round(val_fraction · n_c) of every class (the authors' 80/20 per class, so both
    parts keep the imbalance). ``balanced``: the same number m of every class, m chosen so that
    the total is about ``val_fraction`` · N, with no class giving more than
    ``max_class_fraction`` of its images (small classes give what they can; the validation part is
    as balanced as the data allow). Every class with >= 2 images keeps >= 1 in each part.
    """
    if mode not in ("balanced", "stratified"):
        raise ConfigError(f"bilevel.val_split must be 'balanced' or 'stratified', got {mode!r}")
    counts = np.bincount(labels, minlength=num_classes)
    caps = np.where(counts >= 2, np.maximum(1, np.floor(max_class_fraction * counts)), 0)
    if mode == "stratified":
        take = np.minimum(caps, np.maximum(1, np.floor(val_fraction * counts + 0.5)))
    else:
        target = val_fraction * len(labels)
        # The largest m with Σ_c min(m, cap_c) <= target (water filling).
        m = 0
        while m < caps.max() and np.minimum(m + 1, caps).sum() <= target:
            m += 1
        take = np.minimum(max(m, 1), caps)
    take = take.astype(np.int64)
    val = [
        rng.choice(np.flatnonzero(labels == c), size=int(take[c]), replace=False)
        for c in range(num_classes)
        if take[c] > 0
    ]
    val_index = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    train_index = np.setdiff1d(np.arange(len(labels)), val_index)
    return train_index.astype(np.int64), val_index.astype(np.int64)


# -- the trainer -------------------------------------------------------------------------------


class BilevelTrainer(Trainer):
    """Trains the classifier on the parametric loss while the upper level learns the loss.

    Epochs < ``warmup_epochs`` use plain CE; afterwards every ``upper_every`` steps (until
    ``upper_end_fraction`` of the epochs) one upper step: a hypergradient of the validation
    objective averaged over ``hyper_train_batches`` training and ``hyper_val_batches``
    validation batches (no augmentation; batch-norm in eval mode so the Hessian is of a fixed
    function), clipped to ``upper_clip``, then an Adam/SGD step on the loss's raw parameters, which
    are then clipped to their bounds (offsets are also centred: a common shift of ι changes
    nothing). The ``val`` passed to :meth:`fit` is the upper level's validation data.

    Args:
        bilevel: the AutoBalance settings.
        train_groups, val_groups: group attributes int64 (N,) of the fit's train and val splits,
            for the group-sensitive loss and the fairness objective; None without groups.
        **kwargs: those of :class:`Trainer`; ``loss`` must be a :class:`ParametricLoss`.
    """

    def __init__(
        self,
        *,
        bilevel: BilevelConfig,
        train_groups: np.ndarray | None = None,
        val_groups: np.ndarray | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(self.loss, ParametricLoss):
            raise ConfigError("the bilevel trainer needs loss 'parametric'")
        self.bilevel = bilevel
        self.train_groups = train_groups
        self.val_groups = val_groups
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
        self.train_group_tensor = self._groups_tensor(self.train_groups, len(self.train_labels))
        self.val_group_tensor = self._groups_tensor(self.val_groups, len(self.val_labels))
        if self.loss.num_attributes > 1 and self.train_group_tensor is None:
            raise DataError("bilevel.group_sensitive needs group attributes of the training pool")
        if self.bilevel.objective == "fairness" and self.val_group_tensor is None:
            raise DataError("bilevel.objective 'fairness' needs group attributes in the data")

    def _groups_tensor(self, groups: np.ndarray | None, n: int) -> Tensor | None:
        if groups is None:
            return None
        if len(groups) != n:
            raise ValueError(f"expected {n} group attributes, got {len(groups)}")
        return torch.as_tensor(np.asarray(groups), dtype=torch.int64, device=self.device)

    def _epochs(self) -> int:
        return self.settings.epochs

    def training_step(self, x: Tensor, y: Tensor, index: Tensor, step: int) -> Tensor:
        """CE during warm-up; afterwards the parametric loss, with an upper step every k steps."""
        epoch = step // self.steps_per_epoch
        upper_active = epoch >= self.bilevel.warmup_epochs
        end = self.bilevel.upper_end_fraction * self._epochs() * self.steps_per_epoch
        if upper_active and step < end and step % self.bilevel.upper_every == 0:
            self.upper_step(step)
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.model(x)
        if upper_active:
            groups = None if self.loss.num_attributes == 1 else self.train_group_tensor[index]
            loss = self._lower_loss(logits, y, groups)
        else:
            loss = F.cross_entropy(logits, y)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def _lower_loss(self, logits: Tensor, y: Tensor, groups: Tensor | None) -> Tensor:
        # Detached parameter values: the lower step must not build a graph into α.
        loss = self.loss
        row = torch.zeros_like(y) if groups is None else groups
        scale, offset, weight = (
            t.detach() for t in (loss.scales(), loss.offsets(), loss.weights())
        )
        adjusted = scale[row] * logits + offset[row]
        return (weight[row, y] * F.cross_entropy(adjusted, y, reduction="none")).mean()

    # -- the upper step --------------------------------------------------------------------------

    def _sample(self, n: int, batches: int, generator: torch.Generator) -> Tensor:
        size = min(n, batches * self.settings.batch_size)
        return torch.randperm(n, generator=generator)[:size].to(self.device)

    def upper_step(self, step: int) -> HypergradientResult:
        """One hypergradient step on the loss parameters; appends its diagnostics to the log."""
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
        # The loss rows follow the attribute only in group-sensitive mode.
        g_tr = None if loss.num_attributes == 1 else self.train_group_tensor[train_idx]
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
            if cfg.hyper_params == "head":
                with torch.no_grad():
                    f_tr = self.model.forward_features(x_tr)
                    f_va = self.model.forward_features(x_va)
                head = self.model.head
                params = [head.weight, head.bias]

                def logits_tr(w: Sequence[Tensor]) -> Tensor:
                    return F.linear(f_tr, w[0], w[1])

                def logits_va(w: Sequence[Tensor]) -> Tensor:
                    return F.linear(f_va, w[0], w[1])
            else:
                from torch.func import functional_call

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
                ce = _parametric_ce(loss, z, y_tr, g_tr, values)
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
            if cfg.hypergradient == "unrolled":
                lr = self.optimizer.param_groups[0]["lr"]
                result = unrolled_hypergradient(train_loss, val_loss, params, alpha, lr=lr)
            else:
                result = implicit_hypergradient(
                    train_loss,
                    val_loss,
                    params,
                    alpha,
                    solver=cfg.hypergradient,
                    terms=cfg.neumann_terms,
                    eta=cfg.eta,
                    eta_scale=cfg.eta_scale,
                    power_iterations=cfg.power_iterations,
                    cg_iterations=cfg.cg_iterations,
                    damping=cfg.damping,
                    generator=generator,
                )
        finally:
            self.model.train(was_training)
        norm = _norm(result.grads)
        clip = min(1.0, cfg.upper_clip / norm) if norm > 0 and math.isfinite(norm) else 0.0
        self.upper_optimizer.zero_grad(set_to_none=True)
        for param, grad in zip(alpha, result.grads, strict=True):
            param.grad = torch.nan_to_num(grad * clip, nan=0.0, posinf=0.0, neginf=0.0)
        self.upper_optimizer.step()
        self._project()
        entry = {
            "step": step,
            "epoch": step // self.steps_per_epoch,
            **result.log(),
            "clip_factor": clip,
        }
        self.hyper_log.append(entry)
        return result

    @torch.no_grad()
    def _project(self) -> None:
        cfg, loss = self.bilevel, self.loss
        loss.raw_offset.sub_(loss.raw_offset.mean(dim=1, keepdim=True))
        loss.raw_offset.clamp_(-cfg.offset_bound, cfg.offset_bound)
        if loss.scale_parameterisation == "exp":
            # A common factor of Δ is a temperature of the raw logits, which the upper objective
            # (measured on the raw logits) would exploit for calibration rather than balance:
            # fix the geometric mean of Δ to 1.
            loss.raw_scale.sub_(loss.raw_scale.mean(dim=1, keepdim=True))
        loss.raw_scale.clamp_(-cfg.log_scale_bound, cfg.log_scale_bound)
        # Mean log-weight 0 keeps the loss (hence the effective learning rate) on CE's scale.
        loss.raw_weight.sub_(loss.raw_weight.mean(dim=1, keepdim=True))
        loss.raw_weight.clamp_(-cfg.log_weight_bound, cfg.log_weight_bound)

    # -- results and checkpoints -----------------------------------------------------------------

    def extra_metrics(self, train: LabeledImages) -> dict[str, Any]:
        """The learned per-class parameters and a summary of the upper steps."""
        lambdas = [e["lambda_max"] for e in self.hyper_log if e["lambda_max"] is not None]
        growing = sum(
            1
            for e in self.hyper_log
            if len(e["term_norms"]) > 1 and e["term_norms"][-1] > e["term_norms"][0]
        )
        return {
            "learned_loss": self.loss.class_parameters(),
            "upper_steps": len(self.hyper_log),
            "lambda_max_first_last": [lambdas[0], lambdas[-1]] if lambdas else None,
            "neumann_diverging_steps": growing,
            "clipped_steps": sum(1 for e in self.hyper_log if e["clip_factor"] < 1.0),
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


def _parametric_ce(
    loss: ParametricLoss,
    logits: Tensor,
    labels: Tensor,
    groups: Tensor | None,
    values: dict[str, Tensor],
) -> Tensor:
    """Mean ω_y CE(Δ ⊙ z + ι, y) with the raw parameters in ``values`` replacing the loss's own."""
    slots = loss.slot_of_class
    raw_scale = values.get("raw_scale", loss.raw_scale.detach())
    raw_offset = values.get("raw_offset", loss.raw_offset.detach())
    raw_weight = values.get("raw_weight", loss.raw_weight.detach())
    scale = raw_scale[:, slots]
    scale = torch.exp(scale) if loss.scale_parameterisation == "exp" else torch.sigmoid(scale)
    offset = raw_offset[:, slots]
    weight = torch.exp(raw_weight[:, slots])
    row = torch.zeros_like(labels) if groups is None else groups
    adjusted = scale[row] * logits + offset[row]
    return (weight[row, labels] * F.cross_entropy(adjusted, labels, reduction="none")).mean()
