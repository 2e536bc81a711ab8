"""Mean attention distance (ViT paper, LUT paper Fig. 4) in pixels of the model input.

d(l, h, x) = (1 / N) sum_i sum_j A_ij * P * ||p_i - p_j||, over the renormalised patch-to-patch
attention A; averaged over images per head, and over heads for the per-layer curve.
"""

from __future__ import annotations

import torch


def grid_distances(grid: int, patch_size: int) -> torch.Tensor:
    """(L, L) Euclidean distances between patch centres, in pixels."""
    r, c = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    pos = torch.stack([r.flatten(), c.flatten()], dim=1).double()
    return torch.cdist(pos, pos) * patch_size


def mean_attention_distance(attn: torch.Tensor, grid: int, patch_size: int) -> torch.Tensor:
    """attn: (..., L, L) row-stochastic patch attention -> (...) mean distance in pixels."""
    dist = grid_distances(grid, patch_size).to(attn.device, torch.float64)
    return (attn.double() * dist).sum(dim=-1).mean(dim=-1)
