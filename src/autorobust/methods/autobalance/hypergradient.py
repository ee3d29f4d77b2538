"""AutoBalance's hypergradients (Li et al., NeurIPS 2021).

Lower level: w*(α) = argmin_w L_train(w, α) + (λ/2)‖w‖² with the parametric loss ℓ_α. Upper level:
min_α L_val(w*(α)). By the implicit function theorem

    dL_val/dα = −(∂²L_train/∂α∂w) · H⁻¹ g,   H = ∇²_w L_train (+ λI),   g = ∇_w L_val,

and v = H⁻¹ g is approximated by the Neumann series v ≈ η Σ_{j=0}^{J} (I − ηH)^j g (authors' code),
by conjugate gradients, or solved exactly for small problems. The series converges only when every
eigenvalue of ηH lies in (0, 2): the authors' η = 1 diverged on this project's protocol, so η
defaults to ``eta_scale / λ_max`` with λ_max estimated by power iteration on the same
Hessian-vector product, and the norms of the series' terms are logged. Guards
(:func:`implicit_hypergradient`): a fixed η is checked against λ_max, a growing series halves η
and then falls back to CG, and CG that meets negative curvature skips the step with a reason,
so a delivered hypergradient is never one whose direction the solver could not vouch for.
The one-step unrolled alternative differentiates L_val(w − lr ∇_w L_train(w, α)) with torch.func.

The functions here take closures over lists of tensors, so the same code serves the classifier
(``hyper_params: head`` differentiates through the last linear layer on fixed features, ``all``
through every parameter) and the tests' multinomial logistic regression with known optimum.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import Tensor

__all__ = [
    "GROWTH_SLACK",
    "HypergradientResult",
    "InverseHVP",
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
    # sum() starts from the int 0, which only an empty list would return; lists of parameters
    # are never empty. (A tensor start would change the result's dtype promotion.)
    return cast(Tensor, sum((x * y).sum() for x, y in zip(a, b, strict=True)))


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


GROWTH_SLACK = 1e-4
"""Relative slack of the growth test: with η·λ_max < 2 and H positive semi-definite the Neumann
terms never grow (‖I − ηH‖ ≤ 1), so a term more than this fraction above its predecessor (or the
first term) means an eigenvalue of ηH outside [0, 2]; the slack absorbs float32 rounding of the
Hessian-vector product (about 1e-6 relative)."""


@dataclass
class InverseHVP:
    """v ≈ H⁻¹ g from an iterative solver, and how the solver ended.

    Attributes:
        vector: v, tensors shaped like g.
        norms: Neumann: ‖(I − ηH)^j g‖ for j = 0, 1, … (the terms computed, including a growing
            one); CG: residual norms ‖g − (H + δI) x_k‖.
        status: ``converged`` (relative term norm / residual ≤ tol), ``truncated`` (the term or
            iteration budget ran out first; with no tolerance this is the fixed-J series),
            ``growth`` (Neumann: a term outgrew its predecessor or the first term, so some
            eigenvalue of ηH lies outside (0, 2); ``vector`` is the sum before that term) or
            ``negative_curvature`` (CG: p·(H + δI)p ≤ 0, so H + δI is not positive definite;
            ``vector`` is the last iterate).
        detail: one line saying what happened, for the upper-step log.
        curvature: Neumann ``growth`` only: the Rayleigh quotient t·Ht / t·t of the term t that
            the growing step multiplied by (I − ηH) (free: H t was computed anyway). ≤ 0 proves
            that H is not positive definite; > 0 with growth means η·λ_max > 2 or an
            indefiniteness this term does not show yet.
        min_curvature: Neumann only: the smallest Rayleigh quotient t·Ht / t·t over the terms
            multiplied by H (free, as ``curvature``); ≤ 0 proves H indefinite even when no term
            grew (None: no term was).
        last_term: Neumann ``converged`` or ``truncated``: the last term (I − ηH)^j g.
    """

    vector: Tensors
    norms: list[float]
    status: str
    detail: str = ""
    curvature: float | None = None
    min_curvature: float | None = None
    last_term: Tensors | None = None


def neumann_inverse_hvp(
    hvp: HVP,
    g: Sequence[Tensor],
    *,
    eta: float,
    terms: int,
    tol: float | None = None,
) -> InverseHVP:
    """v ≈ H⁻¹ g = η Σ_{j=0}^{J} (I − ηH)^j g, stopping early on convergence or growth.

    Converges when every eigenvalue of ηH lies in (0, 2) (error ∝ max|1 − ηλ|^{J+1}); pick η below
    2/λ_max (:func:`lambda_max`). A term whose norm exceeds its predecessor's or the first one's
    (by more than :data:`GROWTH_SLACK`) stops the series with status ``growth``: it cannot happen
    for a positive semi-definite H with η·λ_max ≤ 2, and the terms would only grow from there.

    Args:
        hvp: v ↦ H v.
        g: the right-hand side, tensors shaped like the parameters.
        eta: η > 0.
        terms: J, the most terms after the first.
        tol: stop (``converged``) once ‖(I − ηH)^j g‖ ≤ tol · ‖g‖; None: always J terms
            (``truncated``), the authors' fixed series.
    """
    term = [t.detach().clone() for t in g]
    total = [eta * t for t in term]
    norms = [tensor_norm(term)]
    if norms[0] == 0.0:
        return InverseHVP(total, norms, "converged", "g = 0")
    lowest: float | None = None
    for j in range(1, terms + 1):
        hv = hvp(term)
        previous = term
        # The Rayleigh quotient of this term (a zero term, once the series is exact, has none).
        curvature = float(_dot(previous, hv)) / norms[-1] ** 2 if norms[-1] > 0 else math.nan
        if norms[-1] > 0 and (lowest is None or not curvature >= lowest):
            lowest = curvature
        term = [t - eta * h for t, h in zip(term, hv, strict=True)]
        norm = tensor_norm(term)
        norms.append(norm)
        limit = (1.0 + GROWTH_SLACK) * min(norms[-2], norms[0])
        if not math.isfinite(norm) or norm > limit:
            larger = "its predecessor" if norms[-2] <= norms[0] else "the first"
            return InverseHVP(
                total,
                norms,
                "growth",
                f"term {j} grew (norm {norm:.3g} > {larger} {min(norms[-2], norms[0]):.3g}; "
                f"eta {eta:.3g}, curvature t·Ht/t·t {curvature:.3g})",
                curvature=curvature,
                min_curvature=lowest,
            )
        total = [s + eta * t for s, t in zip(total, term, strict=True)]
        if tol is not None and norm <= tol * norms[0]:
            return InverseHVP(
                total, norms, "converged", f"{j} terms", min_curvature=lowest, last_term=term
            )
    relative = norms[-1] / norms[0]
    return InverseHVP(
        total,
        norms,
        "truncated",
        f"relative term norm {relative:.3g} after {terms} terms",
        min_curvature=lowest,
        last_term=term,
    )


def conjugate_gradient(
    hvp: HVP,
    g: Sequence[Tensor],
    *,
    iterations: int,
    damping: float = 0.0,
    tol: float = 1e-10,
) -> InverseHVP:
    """v ≈ (H + δI)⁻¹ g by conjugate gradients, which needs H + δI positive definite.

    Stops with ``converged`` once ‖g − (H + δI) x‖ ≤ tol · ‖g‖, ``truncated`` after
    ``iterations`` steps, or ``negative_curvature`` when a search direction p has
    p·(H + δI)p ≤ 0: H + δI is not positive definite there, CG's step would be undefined or point
    uphill, and ``vector`` holds the last iterate (0 at the first step). The caller decides what
    to do with that (the bilevel trainer skips the upper step).
    """
    x = [torch.zeros_like(t) for t in g]
    r = [t.detach().clone() for t in g]
    p = [t.clone() for t in r]
    rr = float(_dot(r, r))
    norms = [math.sqrt(rr)]
    target = tol * norms[0]
    if norms[0] == 0.0:
        return InverseHVP(x, norms, "converged", "g = 0")
    for k in range(iterations):
        if math.sqrt(rr) <= target:
            return InverseHVP(x, norms, "converged", f"{k} iterations")
        ap = [h + damping * q for h, q in zip(hvp(p), p, strict=True)]
        curvature = float(_dot(p, ap))
        if not curvature > 0.0:  # also catches nan
            rayleigh = curvature / float(_dot(p, p))
            return InverseHVP(
                x,
                norms,
                "negative_curvature",
                f"negative curvature p·(H + δI)p / ‖p‖² = {rayleigh:.3g} at iteration {k + 1} "
                f"(δ = {damping:g})",
            )
        step = rr / curvature
        x = [xi + step * pi for xi, pi in zip(x, p, strict=True)]
        r = [ri - step * api for ri, api in zip(r, ap, strict=True)]
        rr_new = float(_dot(r, r))
        p = [ri + (rr_new / rr) * pi for ri, pi in zip(r, p, strict=True)]
        rr = rr_new
        norms.append(math.sqrt(rr))
    if math.sqrt(rr) <= target:
        return InverseHVP(x, norms, "converged", f"{iterations} iterations")
    return InverseHVP(
        x,
        norms,
        "truncated",
        f"relative residual {norms[-1] / norms[0]:.3g} after {iterations} iterations",
    )


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
        grads: dL_val/dα, tensors shaped like α (zeros when the step is skipped).
        val_loss: L_val at the current w (float).
        lambda_max: the power-iteration estimate of H's largest |eigenvalue| (nan if not
            computed: solvers other than Neumann).
        eta: η of the Neumann series after any damping or halving (nan for other solvers).
        term_norms: ‖(I − ηH)^j g‖ (Neumann) or residual norms (CG) of the solver whose v was
            used (for a skipped step: the one that failed).
        solver: the solver whose v was used: ``neumann``, ``cg``, ``exact`` or ``unrolled``.
        events: what the guards did and why, one line each (η damped or halved, fallbacks).
        skipped: why no hypergradient was delivered (the caller takes no upper step); None if
            one was.
        hvps: Hessian-vector products spent (power iteration and solvers): the cost beyond one
            gradient of each level.
        neumann_growths: Neumann series (attempts) whose terms grew.
    """

    grads: Tensors
    val_loss: float
    lambda_max: float = float("nan")
    eta: float = float("nan")
    term_norms: list[float] = field(default_factory=list)
    solver: str = ""
    events: list[str] = field(default_factory=list)
    skipped: str | None = None
    hvps: int = 0
    neumann_growths: int = 0

    def log(self) -> dict[str, Any]:
        """JSON-serialisable diagnostics (norms rounded; a long series keeps its first and last
        ten norms, ``terms`` says how many there were)."""
        norms = [float(f"{n:.4g}") for n in self.term_norms]
        norm = tensor_norm(self.grads) if self.grads else float("nan")
        return {
            "val_loss": self.val_loss,
            # None rather than nan: strict JSON (learned_loss.json) has no nan.
            "lambda_max": self.lambda_max if math.isfinite(self.lambda_max) else None,
            "eta": self.eta if math.isfinite(self.eta) else None,
            "hypergrad_norm": norm if math.isfinite(norm) else None,
            "solver": self.solver,
            "terms": max(len(norms) - 1, 0),
            "term_norms": norms if len(norms) <= 21 else norms[:10] + norms[-10:],
            "hvps": self.hvps,
            "neumann_growths": self.neumann_growths,
            "events": list(self.events),
            "skipped": self.skipped,
        }


def implicit_hypergradient(
    train_loss: Callable[[Sequence[Tensor], Sequence[Tensor]], Tensor],
    val_loss: Callable[[Sequence[Tensor]], Tensor],
    params: Sequence[Tensor],
    alpha: Sequence[Tensor],
    *,
    solver: str = "neumann",
    terms: int = 5,
    neumann_tol: float | None = None,
    eta: float | None = None,
    eta_scale: float = 1.0,
    eta_halvings: int = 2,
    power_iterations: int = 20,
    cg_iterations: int = 20,
    cg_tol: float = 1e-6,
    damping: float = 0.0,
    generator: torch.Generator | None = None,
) -> HypergradientResult:
    """dL_val(w*(α))/dα = −(∂²L_train/∂α∂w) H⁻¹ ∇_w L_val at w = ``params`` (assumed ≈ w*(α)).

    The guards (each logged in ``events`` / ``skipped``):

    - Neumann: λ_max is always estimated; a fixed ``eta`` with η·λ_max ≥ 2 (the series would
      diverge) is damped to ``eta_scale / λ_max``. A growing term (see
      :func:`neumann_inverse_hvp`) whose predecessor has curvature t·Ht ≤ 0 proves H indefinite
      and skips the step (no η cures that); otherwise η is halved and the series restarts, up to
      ``eta_halvings`` times (this cures an underestimated λ_max). Growth after that, or, with
      ``neumann_tol``, no convergence within ``terms`` terms falls back to CG. A fixed J
      (``neumann_tol`` None) is an approximation whose error these guards do not bound.
    - CG (the solver, or the fallback): negative curvature skips the step: H + δI is not
      positive definite, so w is no minimum of the lower problem and the implicit hypergradient
      is undefined; no approximation would have a trustworthy direction. A CG that runs out of
      iterations is used (on a positive definite H its iterates never reverse the direction of
      the solution) and logged.

    Args:
        train_loss: (w, α) ↦ lower objective (scalar), including any weight decay on w.
        val_loss: w ↦ upper objective (scalar); it does not depend on α directly.
        params: w (values; detached copies are differentiated).
        alpha: α (values).
        solver: "neumann", "cg" or "exact" (dense Hessian; small problems only; no guards).
        terms: J of the Neumann series (with ``neumann_tol``: the most terms).
        neumann_tol: stop the series once the relative term norm is ≤ this; None: J terms.
        eta: fixed η; None: ``eta_scale / λ_max``.
        eta_scale: η·λ_max, in (0, 2).
        eta_halvings: times η is halved after the series grew, before falling back to CG.
        power_iterations: steps of :func:`lambda_max`.
        cg_iterations, cg_tol: CG's iteration budget and relative residual tolerance.
        damping: δ of CG's system (H + δI) v = g (also used by "exact").
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
    products = hessian_vector_product(gradients, w)
    result = HypergradientResult(grads=[], val_loss=float(upper.detach()), solver=solver)

    def hvp(vector: Sequence[Tensor]) -> Tensors:
        result.hvps += 1
        return products(vector)

    v: Tensors | None = None
    if solver == "neumann":
        v = _guarded_neumann(
            hvp,
            g,
            w,
            result,
            terms=terms,
            tol=neumann_tol,
            eta=eta,
            eta_scale=eta_scale,
            eta_halvings=eta_halvings,
            power_iterations=power_iterations,
            generator=generator,
        )
    elif solver == "exact":
        v = _exact_inverse_hvp(hvp, g, damping)
    if result.skipped is not None:
        result.grads = [torch.zeros_like(t) for t in a]
        return result
    if v is None:  # CG, chosen or as the fallback
        solved = conjugate_gradient(hvp, g, iterations=cg_iterations, damping=damping, tol=cg_tol)
        result.solver, result.term_norms = "cg", solved.norms
        if solved.status == "negative_curvature":
            result.skipped = (
                f"cg: {solved.detail}: H is not positive definite, so w is no minimum of the "
                "lower problem and the implicit hypergradient is undefined"
            )
            result.grads = [torch.zeros_like(t) for t in a]
            return result
        if solved.status == "truncated":
            result.events.append(f"cg: {solved.detail} (used: its direction is safe)")
        v = solved.vector
    mixed = torch.autograd.grad(gradients, a, grad_outputs=v, allow_unused=True)
    result.grads = [
        torch.zeros_like(t) if m is None else -m.detach() for m, t in zip(mixed, a, strict=True)
    ]
    return result


def _guarded_neumann(
    hvp: HVP,
    g: Sequence[Tensor],
    w: Sequence[Tensor],
    result: HypergradientResult,
    *,
    terms: int,
    tol: float | None,
    eta: float | None,
    eta_scale: float,
    eta_halvings: int,
    power_iterations: int,
    generator: torch.Generator | None,
) -> Tensors | None:
    """The Neumann solve of :func:`implicit_hypergradient` with its guards; records λ_max, η,
    the term norms, events and a skip reason in ``result``; None: skip (``result.skipped``) or
    fall back to CG."""
    result.lambda_max = lambda_max(hvp, w, iterations=power_iterations, generator=generator)
    safe_eta = eta_scale / max(result.lambda_max, 1e-12)
    if eta is None:
        eta = safe_eta
    elif eta * result.lambda_max >= 2.0:
        result.events.append(
            f"eta {eta:.3g} x lambda_max {result.lambda_max:.3g} = "
            f"{eta * result.lambda_max:.3g} >= 2, the series would diverge: eta damped to "
            f"{safe_eta:.3g}"
        )
        eta = safe_eta
    for halving in range(eta_halvings + 1):
        solved = neumann_inverse_hvp(hvp, g, eta=eta, terms=terms, tol=tol)
        result.eta, result.term_norms = eta, solved.norms
        if solved.status != "growth":
            break
        result.neumann_growths += 1
        if solved.curvature is not None and not solved.curvature > 0.0:
            # No η cures a negative eigenvalue: the growing term proves there is one.
            result.skipped = (
                f"neumann: {solved.detail}: H is not positive definite, so w is no minimum "
                "of the lower problem and the implicit hypergradient is undefined"
            )
            return None
        if halving == eta_halvings:
            break
        result.events.append(f"neumann: {solved.detail}: eta halved to {eta / 2:.3g}")
        eta /= 2.0
    if solved.status == "growth":
        result.events.append(
            f"neumann: {solved.detail} after {eta_halvings} halvings of eta (H is not "
            "positive definite): fell back to cg"
        )
        return None
    if solved.status == "truncated" and tol is not None:
        result.events.append(f"neumann: {solved.detail} > tol {tol:g}: fell back to cg")
        return None
    # A term t with t·Ht <= 0 makes the next one grow, so an accepted series shows an indefinite
    # H only in its last term, which no step multiplied by H: one more product measures it. The
    # series is accepted, as the authors' method would, and the step says so.
    lowest = solved.min_curvature
    last = solved.last_term
    if last is not None and tensor_norm(last) > 0.0:
        curvature = float(_dot(last, hvp(last))) / tensor_norm(last) ** 2
        lowest = curvature if lowest is None or not curvature >= lowest else lowest
    if lowest is not None and not lowest > 0.0:
        result.events.append(
            f"neumann: H is indefinite (a term's curvature t·Ht/t·t is {lowest:.3g} <= 0) "
            "though no term grew: series accepted"
        )
    return solved.vector


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
    return HypergradientResult(
        grads=[g.detach() for g in grads], val_loss=float(value), solver="unrolled"
    )
