"""Block masks: how many images, which ratios, block shapes on small grids, split-independence."""

import random

import numpy as np
import torch

from unmasked.objectives.dino.block_mask import batch_block_masks, block_mask, default_min_patches
from unmasked.rng import BatchRandom


def test_minimum_block_scales_with_the_token_count():
    assert default_min_patches(196) == 4  # BEiT/DINOv2 at 14 x 14 tokens
    assert default_min_patches(49) == 1  # 7 x 7: the lowest ratio (4 patches) is reachable
    assert default_min_patches(9) == 1


def test_block_mask_never_exceeds_its_target_and_reaches_it_on_a_7x7_grid():
    rnd = random.Random(0)
    hits = 0
    for target in range(1, 25):
        m = block_mask(7, 7, target, 1, rnd)
        assert m.sum() <= target
        hits += m.sum() == target
    assert hits >= 20  # a minimum of 4 would miss most small targets


def test_half_the_global_crops_are_masked_with_stratified_ratios():
    b, grid = 64, 7
    masks = batch_block_masks(BatchRandom(0, 5, 0, b), 2, grid, 0.5, 0.1, 0.5, 1)
    assert masks.shape == (2 * b, grid * grid) and masks.dtype == torch.bool
    counts = masks.sum(dim=1)
    masked = counts[counts > 0]
    assert len(masked) <= b and len(masked) >= b - 4  # int(128 * 0.5) targets; a few may fall short
    ratios = masked.float() / grid**2
    assert ratios.min() >= 0.06 and ratios.max() <= 0.5
    # stratified: the masked images cover the whole range evenly, not clumped
    hist = np.histogram(ratios.numpy(), bins=4, range=(0.1, 0.5))[0]
    assert hist.min() >= 8


def test_masks_are_deterministic_and_independent_of_the_process_split():
    full = batch_block_masks(BatchRandom(3, 1, 0, 8), 2, 7, 0.5, 0.1, 0.5, 1)
    again = batch_block_masks(BatchRandom(3, 1, 0, 8), 2, 7, 0.5, 0.1, 0.5, 1)
    assert torch.equal(full, again)
    for rank in range(2):
        part = batch_block_masks(BatchRandom(3, 1, 0, 8, rank=rank, world=2), 2, 7, 0.5, 0.1, 0.5, 1)
        # crop c of local image i is global image rank + 2 i
        for c in range(2):
            assert torch.equal(part[c * 4:(c + 1) * 4], full[c * 8 + rank:(c + 1) * 8:2])


def test_no_mask_probability_masks_nothing():
    assert not batch_block_masks(BatchRandom(0, 0, 0, 6), 2, 7, 0.0, 0.1, 0.5, 1).any()
