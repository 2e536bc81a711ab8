"""Loss formulas, kept as plain functions so tests can check them on hand-made tensors."""

import torch
import torch.nn.functional as F

from unmasked.models.patches import normalize_patches


def reconstruction_target(patches: torch.Tensor, norm_pix: bool) -> torch.Tensor:
    return normalize_patches(patches)[0] if norm_pix else patches


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error per patch, averaged over hidden patches only (mask = 1)."""
    per_patch = (pred.float() - target.float()).pow(2).mean(dim=-1)
    return (per_patch * mask).sum() / mask.sum()


def cosine_distance(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """2 - 2 cos(p, z), averaged over the batch; z is a target (no gradient)."""
    return (2.0 - 2.0 * F.cosine_similarity(p.float(), z.detach().float(), dim=-1)).mean()


def cross_view_loss(s1, s2, t1, t2) -> torch.Tensor:
    """LUT's global-context term: 0.5 * [d(s1, t2) + d(s2, t1)], cross-view pairs only."""
    return 0.5 * (cosine_distance(s1, t2) + cosine_distance(s2, t1))
