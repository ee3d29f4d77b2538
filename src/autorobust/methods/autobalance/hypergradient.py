"""AutoBalance's hypergradients (Li et al., NeurIPS 2021; METHODS.md §3).

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

import torch
from torch import Tensor

__all__ = [
    "HypergradientResult",
    "conjugate_gradient",
    "hessian_vector_product",
    "implicit_hypergradient",
    "lambda_max",
    "neumann_inverse_hvp",
    "tensor_norm",
    "unrolled_hypergradient",
]

Tensors = list[Tensor]
HVP = Callable[[Sequence[Tensor]], Tensors]


def _dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    return sum((x * y).sum() for x, y in zip(a, b, strict=True))


def tensor_norm(a: Sequence[Tensor]) -> float:
    """The Euclidean norm of a list of tensors, as one vector (float)."""
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
    norm = tensor_norm(vector)
    vector = [v / norm for v in vector]
    estimate = 0.0
    for _ in range(iterations):
        hv = hvp(vector)
        estimate = abs(float(_dot(vector, hv)))  # Rayleigh quotient of a unit vector
        norm = tensor_norm(hv)
        if norm == 0.0 or not math.isfinite(norm):
            return estimate if math.isfinite(estimate) else 0.0
        vector = [h / norm for h in hv]
    return max(estimate, tensor_norm(hvp(vector)))


def neumann_inverse_hvp(
    hvp: HVP, g: Sequence[Tensor], *, eta: float, terms: int
) -> tuple[Tensors, list[float]]:
    """v ≈ H⁻¹ g = η Σ_{j=0}^{J} (I − ηH)^j g, and the norms ‖(I − ηH)^j g‖ for j = 0..J.

    Converges when every eigenvalue of ηH lies in (0, 2) (error ∝ max|1 − ηλ|^{J+1}); pick η below
    2/λ_max (:func:`lambda_max`). Rising term norms signal divergence.
    """
    term = [t.detach().clone() for t in g]
    total = [eta * t for t in term]
    norms = [tensor_norm(term)]
    for _ in range(terms):
        hv = hvp(term)
        term = [t - eta * h for t, h in zip(term, hv, strict=True)]
        total = [s + eta * t for s, t in zip(total, term, strict=True)]
        norms.append(tensor_norm(term))
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
            "hypergrad_norm": tensor_norm(self.grads)
            if math.isfinite(tensor_norm(self.grads))
            else None,
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
