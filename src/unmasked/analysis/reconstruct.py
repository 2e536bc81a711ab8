"""Reconstructions of MAE / LUT runs, de-normalised so a person can look at them."""

from __future__ import annotations

import numpy as np
import torch

from unmasked.models.patches import normalize_patches, unpatchify
from unmasked.rng import BatchRandom


def to_display(x: torch.Tensor, mean, std) -> np.ndarray:
    """(C, H, W) model-input units -> (H, W) or (H, W, 3) in [0, 1]."""
    m = torch.tensor(mean).view(-1, 1, 1)
    s = torch.tensor(std).view(-1, 1, 1)
    img = (x.cpu() * s + m).clamp(0, 1)
    return img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy()


@torch.no_grad()
def reconstructions(objective, x: torch.Tensor, norm_pix: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    """original / masked / reconstruction / reconstruction with visible patches pasted, in input units."""
    p = objective.encoder.spec.patch_size
    c = objective.encoder.spec.in_chans
    rng = BatchRandom(seed, 0, 0, x.shape[0], x.device)
    pred, mask, patches = objective.reconstruct(x, rng)
    pred = pred.float()
    if norm_pix:  # predictions are in per-patch normalised units: undo with the target's statistics
        _, mean, std = normalize_patches(patches)
        pred = pred * std + mean
    hidden = mask.mask.unsqueeze(-1).bool()
    grey = torch.zeros_like(patches)  # the dataset mean, in normalised input units
    return {
        "original": x,
        "masked": unpatchify(torch.where(hidden, grey, patches), p, c),
        "reconstruction": unpatchify(pred, p, c),
        "pasted": unpatchify(torch.where(hidden, pred, patches), p, c),
        "mask": mask.mask,
    }
