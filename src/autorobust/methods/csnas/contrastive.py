"""Contrastive losses of the label-free fitness: PIRL's NCE loss (CSNAS Eq. (1)-(3)) and NT-Xent.

Notation of paper 000, §III-B: z_i = g(f(x_i)) in R^p is the projection of image i, z^t_i =
l(concat_m g(f(x_i^(m)))) the projection of its M augmented views, r_i its memory-bank entry (an
exponential moving average of z_i) and s(u, v) = u.v / (|u| |v|) the cosine similarity. With a set
of negatives n,

    h(u, v) = exp(s(u, v)/tau) / (exp(s(u, v)/tau) + sum_n exp(s(u, n)/tau))            (1)
    L_NCE(u, v) = -log h(u, v) - sum_n log(1 - h(u, n))                                 (2)
    L = lambda L_NCE(r, z^t) + (1 - lambda) L_NCE(r, z)                                  (3)

Eq. (1) is applied literally to the negative pairs too: h(u, n) has the denominator
exp(s(u, n)/tau) + sum_n' exp(s(u, n')/tau), in which n appears twice (the paper states it the
same way). Everything is computed in log space (``logsumexp``), so tau = 0.07 cannot overflow.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["MemoryBank", "nce_loss", "nt_xent_loss", "pirl_loss"]


def _cosine(u: Tensor, v: Tensor) -> Tensor:
    """Cosine similarities of rows: u (B, p), v (Q, p) -> (B, Q)."""
    return F.normalize(u, dim=-1) @ F.normalize(v, dim=-1).T


def nce_loss(
    anchor: Tensor,
    positive: Tensor,
    negatives: Tensor,
    *,
    tau: float,
    mask: Tensor | None = None,
) -> Tensor:
    """Mean over the batch of L_NCE(anchor_i, positive_i), Eq. (1)-(2).

    Args:
        anchor: u, float (B, p).
        positive: v, float (B, p); row i is anchor i's positive.
        negatives: float (Q, p), the candidate negatives shared by the batch.
        tau: temperature > 0.
        mask: bool (B, Q), which negatives count for which anchor (e.g. not the anchor's own
            views); None: all of them. An anchor needs at least one negative.

    Returns:
        A scalar float tensor (differentiable in all three inputs).
    """
    s_pos = F.cosine_similarity(anchor, positive, dim=-1) / tau  # (B,)
    s_neg = _cosine(anchor, negatives) / tau  # (B, Q)
    if mask is not None:
        s_neg = s_neg.masked_fill(~mask, float("-inf"))
    log_n = torch.logsumexp(s_neg, dim=1)  # log sum_n exp(s(u, n)/tau)
    log_h_pos = s_pos - torch.logaddexp(s_pos, log_n)
    # log(1 - h(u, n)) = log N - log(exp(s(u, n)/tau) + N)
    log_not_neg = log_n[:, None] - torch.logaddexp(s_neg, log_n[:, None])
    if mask is not None:
        log_not_neg = log_not_neg.masked_fill(~mask, 0.0)
    return (-log_h_pos - log_not_neg.sum(dim=1)).mean()


def pirl_loss(
    bank: Tensor,
    z: Tensor,
    z_views: Tensor,
    negatives: Tensor,
    *,
    tau: float = 0.07,
    lambda_weight: float = 0.5,
    mask: Tensor | None = None,
    bank_anchor: bool = True,
) -> Tensor:
    """Eq. (3): lambda L_NCE(r, z^t) + (1 - lambda) L_NCE(r, z), averaged over the batch.

    Args:
        bank: r, the batch's memory-bank entries, float (B, p) (no gradient needed).
        z: projections of the original images, float (B, p).
        z_views: projections of the concatenated views, float (B, p).
        negatives: float (Q, p): in-batch view projections (paper) or drawn bank entries (PIRL).
        tau: temperature.
        lambda_weight: lambda in [0, 1].
        mask: bool (B, Q), valid negatives per sample; None: all.
        bank_anchor: the anchor u of Eq. (2) is r and the positive the network's projection (the
            paper's notation, right with in-batch negatives, which carry the gradient). False
            swaps them, as PIRL does with bank negatives, so that s(u, n) compares the network's
            projection with the bank and the negative term has a gradient.
    """

    def term(v: Tensor) -> Tensor:
        u, w = (bank, v) if bank_anchor else (v, bank)
        return nce_loss(u, w, negatives, tau=tau, mask=mask)

    return lambda_weight * term(z_views) + (1.0 - lambda_weight) * term(z)


def nt_xent_loss(z1: Tensor, z2: Tensor, *, tau: float = 0.5) -> Tensor:
    """SimCLR's NT-Xent (Chen et al. 2020, Eq. (1)) over a batch of two views.

    For each of the 2B projections, the other view of the same image is the positive and the other
    2B - 2 projections are the negatives: -log softmax over cosine similarities / tau, averaged.

    Args:
        z1, z2: float (B, p), projections of the first and second view (B >= 2).
        tau: temperature > 0.
    """
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / tau
    n = z1.shape[0]
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, targets)


class MemoryBank:
    """PIRL's memory bank: one L2-normalised representation r_i per image of the unlabeled set.

    Args:
        size: U, images in the set.
        dim: p.
        momentum: m in [0, 1); an update is r_i <- normalise(m r_i + (1 - m) normalise(z_i)).
        device: where the bank lives.
    """

    def __init__(self, *, size: int, dim: int, momentum: float, device: torch.device) -> None:
        self.momentum = momentum
        self.vectors = torch.zeros(size, dim, device=device)

    def __len__(self) -> int:
        return self.vectors.shape[0]

    @torch.no_grad()
    def fill(self, index: Tensor, z: Tensor) -> None:
        """Set r_index = normalise(z) (the bank's initial state): index int64 (B,), z (B, p)."""
        self.vectors[index] = F.normalize(z.detach().float(), dim=1)

    @torch.no_grad()
    def update(self, index: Tensor, z: Tensor) -> None:
        """Exponential moving average step for the rows ``index`` (int64 (B,)) with z (B, p)."""
        mixed = self.momentum * self.vectors[index] + (1.0 - self.momentum) * F.normalize(
            z.detach().float(), dim=1
        )
        self.vectors[index] = F.normalize(mixed, dim=1)

    def __getitem__(self, index: Tensor) -> Tensor:
        """Entries (B, p) of the rows ``index``; a copy, detached from any graph."""
        return self.vectors[index].clone()
