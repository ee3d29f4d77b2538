"""Hypergradients against finite differences and exact solves, the solver guards, the split and
objectives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from autorobust.methods.autobalance.config import BilevelConfig
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


def _problem(seed: int = 0, feature_scale: float = 1.0):
    """Multinomial logistic regression with the parametric loss (float64); a larger feature
    scale raises the Hessian's largest eigenvalue (≈ scale², λ_min stays at the weight decay)."""
    g = torch.Generator().manual_seed(seed)
    x_tr = feature_scale * torch.randn(N, D, generator=g, dtype=torch.float64)
    y_tr = torch.randint(0, K, (N,), generator=g)
    x_va = feature_scale * torch.randn(30, D, generator=g, dtype=torch.float64)
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
        out = neumann_inverse_hvp(hvp, [rhs], eta=1.0 / lam, terms=terms)
        errors.append(float((out.vector[0] - exact).norm() / exact.norm()))
        assert out.status == "truncated" and len(out.norms) == terms + 1
        assert all(b <= a for a, b in zip(out.norms, out.norms[1:], strict=False))
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-6
    # Beyond 2/λ_max the largest eigen-direction is amplified: the series stops at the first
    # growing term instead of adding it (the old series ran on to 1e3 times the first term).
    out = neumann_inverse_hvp(hvp, [rhs], eta=2.2 / lam, terms=200)
    assert out.status == "growth" and len(out.norms) < 20
    assert out.norms[-1] > out.norms[-2] and "grew" in out.detail
    assert out.curvature is not None and out.curvature > 0  # η too large, not indefinite
    # The authors' η = 1 with λ_max = 4 is such a case.
    assert neumann_inverse_hvp(hvp, [rhs], eta=1.0, terms=50).status == "growth"


def test_neumann_detects_growth_while_the_last_term_is_still_below_the_first():
    """The old check (last term > first) missed a series that first shrinks and then grows."""
    hessian = torch.diag(torch.tensor([1.0, 2.5], dtype=torch.float64))
    rhs = torch.tensor([1.0, 0.01], dtype=torch.float64)
    # η = 1: the first direction is solved in one term, the second is multiplied by -1.5.
    out = neumann_inverse_hvp(lambda v: [hessian @ v[0]], [rhs], eta=1.0, terms=5)
    assert out.status == "growth"
    assert out.norms[-1] < out.norms[0]  # invisible to "last larger than first"
    assert out.norms[-1] > out.norms[-2]
    # The growing term is not added: the sum holds the first two terms only.
    torch.testing.assert_close(out.vector[0], torch.tensor([1.0, 0.01 + 0.01 * -1.5]).double())


def test_neumann_terms_adapt_to_the_tolerance():
    hessian, rhs, _ = _quadratic()
    exact = torch.linalg.solve(hessian, rhs)

    def hvp(v):
        return [hessian @ v[0]]

    for tol in (1e-2, 1e-6):
        out = neumann_inverse_hvp(hvp, [rhs], eta=0.25, terms=1000, tol=tol)
        assert out.status == "converged"
        assert out.norms[-1] <= tol * out.norms[0] < out.norms[-2]
        # The tail after a relative term norm t is at most t/(ηλ_min) = 8t of the solution here.
        assert float((out.vector[0] - exact).norm() / exact.norm()) < 8 * tol
    out = neumann_inverse_hvp(hvp, [rhs], eta=0.25, terms=10, tol=1e-6)
    assert out.status == "truncated" and len(out.norms) == 11


def test_conjugate_gradient_solves_the_quadratic():
    hessian, rhs, _ = _quadratic(3)
    out = conjugate_gradient(lambda v: [hessian @ v[0]], [rhs], iterations=40)
    exact = torch.linalg.solve(hessian, rhs)
    torch.testing.assert_close(out.vector[0], exact, rtol=1e-8, atol=1e-8)
    assert out.status == "converged" and out.norms[-1] < 1e-8
    short = conjugate_gradient(lambda v: [hessian @ v[0]], [rhs], iterations=2)
    assert short.status == "truncated" and "after 2 iterations" in short.detail


def _indefinite_quadratic(seed: int = 0, n: int = 12):
    """H with eigenvalues from -0.5 to 4 (one negative), as a lower problem in w with α acting
    linearly: L_train = ½ wᵀHw − wᵀBα, L_val = ½‖w − c‖²; evaluated at a random w."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    eigenvalues = torch.linspace(-0.5, 4.0, n, dtype=torch.float64)
    hessian = q @ torch.diag(eigenvalues) @ q.T
    b = torch.randn(n, 3, generator=g, dtype=torch.float64)
    c = torch.randn(n, generator=g, dtype=torch.float64)

    def train_loss(w, a):
        return 0.5 * w[0] @ hessian @ w[0] - w[0] @ (b @ a[0])

    def val_loss(w):
        return 0.5 * ((w[0] - c) ** 2).sum()

    w = [torch.randn(n, generator=g, dtype=torch.float64)]
    alpha = [torch.randn(3, generator=g, dtype=torch.float64)]
    return train_loss, val_loss, w, alpha, hessian


def test_conjugate_gradient_reports_negative_curvature():
    """The old CG stopped at negative curvature and returned 0 without saying so."""
    _, _, _, _, hessian = _indefinite_quadratic()
    rhs = torch.linalg.eigh(hessian).eigenvectors[:, 0]  # the negative eigen-direction
    out = conjugate_gradient(lambda v: [hessian @ v[0]], [rhs], iterations=40)
    assert out.status == "negative_curvature"
    assert "-0.5 at iteration 1" in out.detail
    # Damping beyond −λ_min makes the system positive definite: CG solves (H + δI) v = g.
    damped = conjugate_gradient(lambda v: [hessian @ v[0]], [rhs], iterations=40, damping=1.0)
    assert damped.status == "converged"
    torch.testing.assert_close(damped.vector[0], rhs / 0.5)


def _mlp_problem(seed: int, hidden: int = 6):
    """A small tanh MLP at its random initialisation (far from any optimum), parametric offsets
    α on its logits; float64."""
    g = torch.Generator().manual_seed(seed)
    x_tr = torch.randn(N, D, generator=g, dtype=torch.float64)
    y_tr = torch.randint(0, K, (N,), generator=g)
    x_va = torch.randn(30, D, generator=g, dtype=torch.float64)
    y_va = torch.randint(0, K, (30,), generator=g)
    alpha = [0.5 * torch.randn(K, generator=g, dtype=torch.float64)]
    w = [
        torch.randn(hidden, D, generator=g, dtype=torch.float64),
        torch.randn(K, hidden, generator=g, dtype=torch.float64),
    ]

    def train_loss(w, a):
        z = torch.tanh(x_tr @ w[0].T) @ w[1].T + a[0]
        return F.cross_entropy(z, y_tr) + 0.5 * 1e-3 * sum((p * p).sum() for p in w)

    def val_loss(w):
        return F.cross_entropy(torch.tanh(x_va @ w[0].T) @ w[1].T, y_va)

    return train_loss, val_loss, w, alpha


def _dense_hessian(train_loss, w, alpha):
    from torch.func import hessian

    sizes = [t.numel() for t in w]

    def flat(v):
        pieces = torch.split(v, sizes)
        return train_loss([p.view_as(t) for p, t in zip(pieces, w, strict=True)], alpha)

    return hessian(flat)(torch.cat([t.reshape(-1) for t in w]))


# The guarded configurations: the default, the adaptive series (with the authors' fixed η = 1,
# which must be damped), and CG. A fixed J (neumann_tol None) is an approximation whose error the
# guards do not bound, so it is checked for direction only (below).
GUARDED = {
    "default": {},
    "neumann adaptive": {"hypergradient": "neumann", "neumann_tol": 1e-6, "neumann_terms": 5000},
    "neumann adaptive eta 1": {
        "hypergradient": "neumann",
        "neumann_tol": 1e-6,
        "neumann_terms": 5000,
        "eta": 1.0,
    },
    "cg": {"hypergradient": "cg", "cg_iterations": 200},
}


def _guarded(train_loss, val_loss, w, alpha, overrides):
    from autorobust.methods.autobalance.trainer import solver_options

    options = solver_options(BilevelConfig(**overrides))
    generator = torch.Generator().manual_seed(0)
    return implicit_hypergradient(train_loss, val_loss, w, alpha, **options, generator=generator)


def _flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


@pytest.mark.parametrize("name", list(GUARDED))
def test_guarded_hypergradient_is_exact_when_lambda_max_exceeds_two(name):
    train_loss, val_loss, alpha = _problem(feature_scale=3.0)
    w_star = _solve(train_loss, alpha)
    eigenvalues = torch.linalg.eigvalsh(_dense_hessian(train_loss, w_star, alpha))
    assert eigenvalues.max() > 8.0 and eigenvalues.min() > 0.0
    exact = _flat(implicit_hypergradient(train_loss, val_loss, w_star, alpha, solver="exact").grads)
    result = _guarded(train_loss, val_loss, w_star, alpha, GUARDED[name])
    assert result.skipped is None  # positive definite: nothing to skip
    assert float((_flat(result.grads) - exact).norm() / exact.norm()) < 1e-2
    if "eta" in GUARDED[name]:
        assert any("eta 1 x lambda_max" in e and "damped" in e for e in result.events)
        assert result.eta * result.lambda_max < 2.0


def test_fixed_eta_is_checked_against_lambda_max():
    """The authors' η = 1, J = 5 on a problem with λ_max ≈ 8: the old series grew to ~4e3 times
    its first term and its hypergradient had cosine 0.48 with the exact one; now η is damped
    (logged) and the short series points the right way."""
    train_loss, val_loss, alpha = _problem(feature_scale=3.0)
    w_star = _solve(train_loss, alpha)
    exact = _flat(implicit_hypergradient(train_loss, val_loss, w_star, alpha, solver="exact").grads)
    result = implicit_hypergradient(
        train_loss, val_loss, w_star, alpha, eta=1.0, terms=5, power_iterations=20
    )
    assert result.lambda_max > 2.0
    assert result.events and "the series would diverge: eta damped to" in result.events[0]
    assert max(result.term_norms) == result.term_norms[0]
    assert float(F.cosine_similarity(_flat(result.grads), exact, dim=0)) > 0.8
    assert result.log()["events"] == result.events


def _indefinite_cases():
    cases = {"quadratic": _indefinite_quadratic()[:4]}
    for seed in range(4):
        cases[f"mlp{seed}"] = _mlp_problem(seed)
    return cases


@pytest.mark.parametrize("name", list(GUARDED))
def test_guarded_hypergradient_on_an_indefinite_hessian_is_exact_or_skipped(name):
    """Never a reversed direction: either within 1e-2 of the exact solve, or no step, with a
    reason. (The old default Neumann series delivered cosines of -0.99 and -0.91 with the exact
    solve on mlp2 and mlp3; the old CG returned 0 silently.)"""
    skipped = 0
    for case, (train_loss, val_loss, w, alpha) in _indefinite_cases().items():
        assert torch.linalg.eigvalsh(_dense_hessian(train_loss, w, alpha)).min() < -0.1, case
        exact = _flat(implicit_hypergradient(train_loss, val_loss, w, alpha, solver="exact").grads)
        result = _guarded(train_loss, val_loss, w, alpha, GUARDED[name])
        if result.skipped is not None:
            skipped += 1
            assert "H is not positive definite" in result.skipped, case
            assert float(_flat(result.grads).abs().max()) == 0.0
            assert result.log()["skipped"] == result.skipped
        else:
            error = float((_flat(result.grads) - exact).norm() / exact.norm())
            assert error < 1e-2, (case, error, result.events)
    assert skipped >= 1


def test_fixed_j_series_on_an_indefinite_hessian_is_skipped_when_a_term_proves_it():
    """The issue's indefinite case with the authors' η = 1, J = 5: the growing term has negative
    curvature, which no η cures, so the step is skipped instead of halving η (a shorter-η series
    would hide the growth within J terms and deliver a reversed direction)."""
    train_loss, val_loss, w, alpha = _mlp_problem(2)
    result = implicit_hypergradient(train_loss, val_loss, w, alpha, eta=1.0, terms=5)
    assert result.skipped is not None and "curvature t·Ht/t·t -" in result.skipped
    assert result.neumann_growths == 1 and result.log()["neumann_growths"] == 1


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


def test_neumann_series_accepted_on_an_indefinite_hessian_says_so():
    """H = diag(2, -0.05): with J = 1 no term grows (the negative direction is small in g), so
    the series is accepted; its last term, all in the negative direction, proves H indefinite
    and the step records that as an event (it used to be accepted without a word)."""
    from autorobust.methods.autobalance.hypergradient import (
        HypergradientResult,
        _guarded_neumann,
    )

    hessian = torch.tensor([[2.0, 0.0], [0.0, -0.05]], dtype=torch.float64)
    g = [torch.tensor([1.0, 0.01], dtype=torch.float64)]
    w = [torch.zeros(2, dtype=torch.float64)]
    result = HypergradientResult(grads=[], val_loss=0.0, solver="neumann")
    v = _guarded_neumann(
        lambda vector: [hessian @ vector[0]],
        g,
        w,
        result,
        terms=1,
        tol=None,
        eta=0.5,
        eta_scale=1.0,
        eta_halvings=2,
        power_iterations=30,
        generator=torch.Generator().manual_seed(0),
    )
    assert v is not None and result.skipped is None
    assert result.events == [
        "neumann: H is indefinite (a term's curvature t·Ht/t·t is -0.05 <= 0) though no term "
        "grew: series accepted"
    ]
    # A positive definite H: no event.
    hessian[1, 1] = 0.05
    result = HypergradientResult(grads=[], val_loss=0.0, solver="neumann")
    _guarded_neumann(
        lambda vector: [hessian @ vector[0]],
        g,
        w,
        result,
        terms=1,
        tol=None,
        eta=0.5,
        eta_scale=1.0,
        eta_halvings=2,
        power_iterations=30,
        generator=torch.Generator().manual_seed(0),
    )
    assert result.events == [] and result.skipped is None
