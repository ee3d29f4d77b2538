"""PIRL's NCE loss (CSNAS Eq. (1)-(3)), NT-Xent and the memory bank against direct computations."""

from __future__ import annotations

import math

import pytest
import torch

from autorobust.methods.csnas.contrastive import MemoryBank, nce_loss, nt_xent_loss, pirl_loss


def _cos(u: torch.Tensor, v: torch.Tensor) -> float:
    return float(u @ v / (u.norm() * v.norm()))


def _nce_by_hand(u, v, negatives, tau) -> float:
    """Eq. (1)-(2) for one anchor, written out term by term."""

    def h(a, b):
        numerator = math.exp(_cos(a, b) / tau)
        return numerator / (numerator + sum(math.exp(_cos(a, n) / tau) for n in negatives))

    return -math.log(h(u, v)) - sum(math.log(1.0 - h(u, n)) for n in negatives)


def test_pirl_loss_matches_equations_1_to_3_written_out() -> None:
    g = torch.Generator().manual_seed(0)
    b, m, p, tau, lam = 3, 2, 5, 0.07, 0.3
    bank = torch.randn(b, p, generator=g, dtype=torch.float64)
    z = torch.randn(b, p, generator=g, dtype=torch.float64)
    z_views = torch.randn(b, p, generator=g, dtype=torch.float64)
    view_proj = torch.randn(m * b, p, generator=g, dtype=torch.float64)  # row m b + j: view m of j
    own = torch.arange(b).repeat(m)
    mask = own[None, :] != torch.arange(b)[:, None]  # the M (K - 1) other images' views

    loss = pirl_loss(bank, z, z_views, view_proj, tau=tau, lambda_weight=lam, mask=mask)

    expected = 0.0
    for i in range(b):
        negatives = [view_proj[q] for q in range(m * b) if own[q] != i]
        assert len(negatives) == m * (b - 1)
        expected += lam * _nce_by_hand(bank[i], z_views[i], negatives, tau)
        expected += (1 - lam) * _nce_by_hand(bank[i], z[i], negatives, tau)
    assert float(loss) == pytest.approx(expected / b, rel=1e-9)


def test_nce_swapped_anchor_and_gradients_match_finite_differences() -> None:
    g = torch.Generator().manual_seed(1)
    u = torch.randn(2, 4, generator=g, dtype=torch.float64)
    v = torch.randn(2, 4, generator=g, dtype=torch.float64, requires_grad=True)
    negatives = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    value = nce_loss(v, u, negatives, tau=0.5)  # PIRL's bank variant: network output as anchor
    expected = sum(
        _nce_by_hand(v[i].detach(), u[i], list(negatives.detach()), 0.5) for i in range(2)
    )
    assert value.item() == pytest.approx(expected / 2, rel=1e-9)
    assert torch.autograd.gradcheck(lambda a, n: nce_loss(a, u, n, tau=0.5), (v, negatives))


def test_large_similarity_over_small_tau_stays_finite() -> None:
    u = torch.ones(2, 3) * 100
    loss = nce_loss(u, u.clone(), -u[:1], tau=0.001)
    # Positive term -> 0; with Eq. (1) read literally, h(u, n) = e_n / (e_n + e_n) = 1/2 for a
    # single negative whatever its similarity, so the negative term is log 2.
    assert torch.isfinite(loss) and float(loss) == pytest.approx(math.log(2.0), abs=1e-4)


def test_nt_xent_matches_a_direct_softmax() -> None:
    g = torch.Generator().manual_seed(2)
    z1, z2 = (
        torch.randn(3, 4, generator=g, dtype=torch.float64),
        torch.randn(3, 4, generator=g, dtype=torch.float64),
    )
    tau = 0.5
    z = torch.cat([z1, z2])
    total = 0.0
    for i in range(6):
        j = (i + 3) % 6
        others = [math.exp(_cos(z[i], z[k]) / tau) for k in range(6) if k != i]
        total += -math.log(math.exp(_cos(z[i], z[j]) / tau) / sum(others))
    assert float(nt_xent_loss(z1, z2, tau=tau)) == pytest.approx(total / 6, rel=1e-9)


def test_memory_bank_is_a_normalised_moving_average() -> None:
    bank = MemoryBank(size=4, dim=2, momentum=0.5, device=torch.device("cpu"))
    index = torch.tensor([1, 3])
    bank.fill(index, torch.tensor([[3.0, 4.0], [0.0, 2.0]]))
    torch.testing.assert_close(bank[index], torch.tensor([[0.6, 0.8], [0.0, 1.0]]))
    bank.update(torch.tensor([3]), torch.tensor([[5.0, 0.0]]))
    torch.testing.assert_close(bank[torch.tensor([3])], torch.tensor([[2**-0.5, 2**-0.5]]))
    assert torch.equal(bank[torch.tensor([0])], torch.zeros(1, 2))
