"""Normalised mutual information between query and key positions of an attention map."""

from __future__ import annotations

import torch


def attention_nmi(attn: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """attn: (..., L, L) row-stochastic -> (...) NMI = I(q; k) / sqrt(H(q) H(k)), p(q) uniform."""
    a = attn.double()
    n = a.shape[-1]
    pk = a.mean(dim=-2)  # p(k) = mean over queries
    h_q = torch.log(torch.tensor(float(n), dtype=torch.float64))
    h_k = -(pk * torch.log(pk + eps)).sum(-1)
    # I(q; k) = H(k) - H(k | q)
    h_k_given_q = -(a * torch.log(a + eps)).sum(-1).mean(-1)
    mi = h_k - h_k_given_q
    return mi / torch.sqrt(h_q * h_k).clamp(min=eps)
