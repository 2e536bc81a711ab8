"""Singular-value spectrum and effective rank (RankMe) of embeddings."""

from __future__ import annotations

import torch


def singular_values(emb: torch.Tensor, center: bool = True) -> torch.Tensor:
    x = emb.double()
    if center:
        x = x - x.mean(dim=0, keepdim=True)
    return torch.linalg.svdvals(x)


def rankme(emb: torch.Tensor, eps: float = 1e-7) -> float:
    """RankMe (Garrido et al., 2023): exp of the entropy of the normalised singular values (uncentred)."""
    s = torch.linalg.svdvals(emb.double())
    p = s / s.sum() + eps
    return float(torch.exp(-(p * torch.log(p)).sum()))
