"""iBOT/BEiT block masks for the student's global crops, adapted to small token grids.

DINOv2 masks half of the global-crop images, with target ratios stratified over [0.1, 0.5]
(`collate_data_and_cast`), each mask built from random rectangles of at least 4 patches, aspect
0.3-3.3, at most half the tokens each (`MaskingGenerator`). Small grids: a block minimum of 4
patches is meant for a 14 x 14 grid; on a 7 x 7 grid it would swallow the lowest ratios (0.1 of
49 tokens is 4 patches: one block or nothing), so the minimum scales with the token count,
4 * L / 196, and is at least 1 (1 patch on 7 x 7, 4 on 14 x 14).

The random numbers come from the step's `BatchRandom`, drawn for the global batch: which images
are masked and their strata from one shared permutation, each image's ratio and block positions
from its own row. So N processes mask exactly as one process does, and a resumed run as the
uninterrupted one.
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch

from unmasked.rng import BatchRandom

LOG_ASPECT = (math.log(0.3), math.log(1 / 0.3))


def default_min_patches(num_patches: int) -> int:
    return max(1, round(4 * num_patches / 196))


def _add_block(mask: np.ndarray, budget: int, rnd: random.Random, min_patches: int) -> int:
    """Mask one random rectangle adding 1..budget new patches; returns how many (0 if 10 tries fail)."""
    rows, cols = mask.shape
    for _ in range(10):
        area = rnd.uniform(min_patches, budget)
        aspect = math.exp(rnd.uniform(*LOG_ASPECT))
        h = int(round(math.sqrt(area * aspect)))
        w = int(round(math.sqrt(area / aspect)))
        if w < cols and h < rows:
            top, left = rnd.randint(0, rows - h), rnd.randint(0, cols - w)
            region = mask[top : top + h, left : left + w]
            new = h * w - int(region.sum())
            if 0 < new <= budget:
                region[...] = True
                return new
    return 0


def block_mask(rows: int, cols: int, target: int, min_patches: int, rnd: random.Random) -> np.ndarray:
    """A (rows, cols) bool mask of at most `target` patches made of random blocks."""
    mask = np.zeros((rows, cols), dtype=bool)
    max_block = int(0.5 * rows * cols)
    count = 0
    while count < target:
        added = _add_block(mask, min(target - count, max_block), rnd, min_patches)
        if added == 0:
            break
        count += added
    return mask


def batch_block_masks(rng: BatchRandom, n_crops: int, grid: int, prob: float, ratio_min: float,
                      ratio_max: float, min_patches: int) -> torch.Tensor:
    """Masks for this process's global crops, (n_crops * B_local, grid * grid) bool, stacked per crop.

    Global-crop image (crop c, global image j) has global index c * G + j; a fraction `prob` of
    them, chosen by a shared permutation, get masks whose ratios are stratified: the i-th masked
    image draws its ratio from [r_i, r_(i+1)] of linspace(ratio_min, ratio_max, n_masked + 1).
    """
    length = grid * grid
    g = rng.global_size
    n_masked = int(n_crops * g * prob)
    strata = torch.linspace(ratio_min, ratio_max, n_masked + 1, dtype=torch.float64).tolist()
    order = torch.argsort(rng.shared_permutation(n_crops * g)).tolist()  # position of each index in it
    u = rng.uniform(n_crops).cpu().tolist()  # (B_local, n_crops)
    seeds = rng.randint(2**31 - 1, n_crops).cpu().tolist()
    out = np.zeros((n_crops, rng.local_size, length), dtype=bool)
    for c in range(n_crops):
        for i in range(rng.local_size):
            stratum = order[c * g + rng.rank + i * rng.world]
            if stratum >= n_masked:
                continue
            lo, hi = strata[stratum], strata[stratum + 1]
            target = int(length * (lo + (hi - lo) * u[i][c]))
            out[c, i] = block_mask(grid, grid, target, min_patches, random.Random(seeds[i][c])).reshape(-1)
    return torch.from_numpy(out.reshape(n_crops * rng.local_size, length))
