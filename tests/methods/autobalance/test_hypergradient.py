"""Hypergradients against finite differences, the Neumann safeguard, the split and objectives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from autorobust.methods.autobalance.hypergradient import (
    conjugate_gradient,
    implicit_hypergradient,
    lambda_max,
    neumann_inverse_hvp,
    unrolled_hypergradient,
)
from autorobust.methods.autobalance.objectives import (
    equal_opportunity_gap,
    fairness_metrics,
    validation_objective,
)
from autorobust.methods.autobalance.split import split_pool

K, D, N = 3, 4, 60
WD = 0.05


def _problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x_tr = torch.randn(N, D, generator=g, dtype=torch.float64)
    y_tr = torch.randint(0, K, (N,), generator=g)
    x_va = torch.randn(30, D, generator=g, dtype=torch.float64)
    y_va = torch.randint(0, K, (30,), generator=g)
    alpha = [
        0.3 * torch.randn(K, generator=g, dtype=torch.float64),  # log Δ
        0.5 * torch.randn(K, generator=g, dtype=torch.float64),  # ι
        0.3 * torch.randn(K, generator=g, dtype=torch.float64),  # log ω
    ]

    def train_loss(w, a):
        z = x_tr @ w[0].T + w[1]
        adjusted = torch.exp(a[0]) * z + a[1]
        ce = F.cross_entropy(adjusted, y_tr, reduction="none")
        return (torch.exp(a[2])[y_tr] * ce).mean() + 0.5 * WD * sum((p * p).sum() for p in w)

    weights = 1.0 / torch.bincount(y_va, minlength=K).double()

    def val_loss(w):
        z = x_va @ w[0].T + w[1]
        return validation_objective(z, y_va, kind="balanced_ce", class_weights=weights)

    return train_loss, val_loss, alpha


def _solve(train_loss, alpha, start=None, iters: int = 50):
    """w*(α) by Newton's method on the strongly convex lower problem (float64, exact to ~1e-14)."""
    from torch.func import grad, hessian

    w = torch.zeros(K * D + K, dtype=torch.float64) if start is None else start.clone()

    def flat(v):
        return train_loss([v[: K * D].view(K, D), v[K * D :]], alpha)

    for _ in range(iters):
        g = grad(flat)(w)
        if g.norm() < 1e-13:
            break
        w = w - torch.linalg.solve(hessian(flat)(w), g)
    return [w[: K * D].view(K, D).clone(), w[K * D :].clone()]


def _finite_differences(train_loss, val_loss, alpha, eps: float = 1e-5):
    # Warm-started Newton converges in a few steps from the unperturbed optimum.
    start = torch.cat([t.reshape(-1) for t in _solve(train_loss, alpha)])
    out = []
    for i, a in enumerate(alpha):
        grad = torch.zeros_like(a)
        for j in range(a.numel()):
            values = []
            for sign in (1.0, -1.0):
                shifted = [t.clone() for t in alpha]
                shifted[i].view(-1)[j] += sign * eps
                values.append(float(val_loss(_solve(train_loss, shifted, start))))
            grad.view(-1)[j] = (values[0] - values[1]) / (2 * eps)
        out.append(grad)
    return torch.cat([g.reshape(-1) for g in out])


def _relative_error(grads, reference):
    flat = torch.cat([g.reshape(-1) for g in grads])
    return float((flat - reference).norm() / reference.norm())


def test_implicit_hypergradient_matches_finite_differences():
    train_loss, val_loss, alpha = _problem()
    w_star = _solve(train_loss, alpha)
    reference = _finite_differences(train_loss, val_loss, alpha)
    assert reference.norm() > 1e-3  # a meaningful, non-vanishing gradient
    exact = implicit_hypergradient(train_loss, val_loss, w_star, alpha, solver="exact")
    assert _relative_error(exact.grads, reference) < 1e-3
    cg = implicit_hypergradient(train_loss, val_loss, w_star, alpha, solver="cg", cg_iterations=60)
    assert _relative_error(cg.grads, reference) < 1e-3
    neumann = implicit_hypergradient(
        train_loss,
        val_loss,
        w_star,
        alpha,
        terms=400,
        eta_scale=1.0,
        power_iterations=100,
        generator=torch.Generator().manual_seed(0),
    )
    assert _relative_error(neumann.grads, reference) < 1e-3
    assert neumann.term_norms[-1] < 1e-6 * neumann.term_norms[0]  # the series converged
    # A 5-term series (the authors' J) is only a rough approximation of the same direction.
    short = implicit_hypergradient(train_loss, val_loss, w_star, alpha, terms=5)
    flat = torch.cat([g.reshape(-1) for g in short.grads])
    assert float(F.cosine_similarity(flat, reference, dim=0)) > 0.5


def test_unrolled_hypergradient_matches_finite_differences_of_the_unrolled_map():
    train_loss, val_loss, alpha = _problem(1)
    w0 = _solve(train_loss, alpha)
    w0 = [w + 0.1 for w in w0]  # start away from the optimum so the step depends on α
    lr, steps = 0.5, 3

    def unrolled_val(a):
        w = [t.clone().requires_grad_(True) for t in w0]
        for _ in range(steps):
            grads = torch.autograd.grad(train_loss(w, a), w)
            w = [
                (wi - lr * gi).detach().requires_grad_(True)
                for wi, gi in zip(w, grads, strict=True)
            ]
        return float(val_loss(w).detach())

    eps, reference = 1e-6, []
    for i, a in enumerate(alpha):
        for j in range(a.numel()):
            plus = [t.clone() for t in alpha]
            minus = [t.clone() for t in alpha]
            plus[i][j] += eps
            minus[i][j] -= eps
            reference.append((unrolled_val(plus) - unrolled_val(minus)) / (2 * eps))
    reference = torch.tensor(reference, dtype=torch.float64)
    result = unrolled_hypergradient(train_loss, val_loss, w0, alpha, lr=lr, steps=steps)
    assert _relative_error(result.grads, reference) < 1e-6


def _quadratic(seed: int = 0, n: int = 12):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    eigenvalues = torch.linspace(0.5, 4.0, n, dtype=torch.float64)
    hessian = q @ torch.diag(eigenvalues) @ q.T
    rhs = torch.randn(n, generator=g, dtype=torch.float64)
    return hessian, rhs, float(eigenvalues.max())


def test_power_iteration_finds_lambda_max():
    hessian, _, true_max = _quadratic()
    estimate = lambda_max(
        lambda v: [hessian @ v[0]],
        [torch.zeros(12, dtype=torch.float64)],
        iterations=200,
        generator=torch.Generator().manual_seed(1),
    )
    assert estimate == pytest.approx(true_max, rel=1e-4)


def test_neumann_converges_below_two_over_lambda_max_and_diverges_above():
    hessian, rhs, _ = _quadratic()
    exact = torch.linalg.solve(hessian, rhs)

    def hvp(v):
        return [hessian @ v[0]]

    lam = lambda_max(hvp, [rhs], iterations=200, generator=torch.Generator().manual_seed(2))
    errors = []
    for terms in (10, 50, 200):
        v, norms = neumann_inverse_hvp(hvp, [rhs], eta=1.0 / lam, terms=terms)
        errors.append(float((v[0] - exact).norm() / exact.norm()))
        assert norms[-1] < norms[0]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-6
    # Beyond 2/λ_max the largest eigen-direction is amplified: terms and error blow up.
    v, norms = neumann_inverse_hvp(hvp, [rhs], eta=2.2 / lam, terms=200)
    assert norms[-1] > 1e3 * norms[0]
    assert float((v[0] - exact).norm() / exact.norm()) > 1e3
    # The authors' η = 1 with λ_max = 4 is such a case.
    _, norms = neumann_inverse_hvp(hvp, [rhs], eta=1.0, terms=50)
    assert norms[-1] > norms[0]


def test_conjugate_gradient_solves_the_quadratic():
    hessian, rhs, _ = _quadratic(3)
    v, residuals = conjugate_gradient(lambda v: [hessian @ v[0]], [rhs], iterations=40)
    torch.testing.assert_close(v[0], torch.linalg.solve(hessian, rhs), rtol=1e-8, atol=1e-8)
    assert residuals[-1] < 1e-8


def test_split_pool_balanced_and_stratified():
    labels = np.repeat(np.arange(4), [100, 40, 10, 3])
    rng = np.random.default_rng(0)
    train, val = split_pool(labels, 4, val_fraction=0.2, mode="balanced", rng=rng)
    assert np.intersect1d(train, val).size == 0 and len(train) + len(val) == len(labels)
    # 30 of 153 images: 5 of the 3-image class would be too many, it gives 1 (half, floored).
    np.testing.assert_array_equal(np.bincount(labels[val], minlength=4), [12, 12, 5, 1])
    train, val = split_pool(labels, 4, val_fraction=0.2, mode="stratified", rng=rng)
    np.testing.assert_array_equal(np.bincount(labels[val], minlength=4), [20, 8, 2, 1])


def test_validation_objectives():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(40, 3, generator=g, dtype=torch.float64)
    y = torch.tensor([0] * 30 + [1] * 8 + [2] * 2)
    ce = F.cross_entropy(z, y, reduction="none")
    per_class = torch.stack([ce[y == c].mean() for c in range(3)])
    weights = 1.0 / torch.bincount(y).double()
    balanced = validation_objective(z, y, kind="balanced_ce", class_weights=weights)
    torch.testing.assert_close(balanced, per_class.mean())
    worst = validation_objective(z, y, kind="worst_class", class_weights=weights, temperature=1e-3)
    torch.testing.assert_close(worst, per_class.max(), atol=1e-2, rtol=0)
    groups = torch.arange(40) % 2
    fair = validation_objective(
        z, y, kind="fairness", class_weights=weights, groups=groups, fairness_weight=2.0
    )
    soft = 1.0 - torch.softmax(z, 1).gather(1, y[:, None]).squeeze(1)
    torch.testing.assert_close(fair, balanced + 2.0 * equal_opportunity_gap(soft, y, groups))


def test_fairness_metrics_by_hand():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    groups = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    preds = np.array([0, 0, 0, 1, 1, 0, 1, 1])
    metrics = fairness_metrics(labels, preds, groups)
    # class 0: recall 1.0 (group 0) vs 0.5 (group 1); class 1: 0.5 vs 1.0 -> mean gap 0.5
    assert metrics["equal_opportunity_gap"] == pytest.approx(0.5)
    assert metrics["worst_group_accuracy"] == pytest.approx(0.5)
    assert metrics["group_accuracy"] == {"0": 0.75, "1": 0.75}
