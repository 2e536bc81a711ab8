"""Per-iteration schedules, precomputed as arrays (value at optimiser step i)."""

import math

import numpy as np


def lr_schedule(peak: float, total_steps: int, warmup_steps: int, min_lr: float = 0.0) -> np.ndarray:
    """Linear warm-up from 0 to `peak`, then half-cycle cosine down to `min_lr` (MAE's recipe)."""
    steps = np.arange(total_steps, dtype=np.float64)
    lr = np.empty(total_steps, dtype=np.float64)
    warm = steps < warmup_steps
    lr[warm] = peak * steps[warm] / max(warmup_steps, 1)
    decay = total_steps - warmup_steps
    t = (steps[~warm] - warmup_steps) / max(decay, 1)
    lr[~warm] = min_lr + (peak - min_lr) * 0.5 * (1.0 + np.cos(math.pi * t))
    return lr


def momentum_schedule(start: float, total_steps: int, end: float = 1.0) -> np.ndarray:
    """EMA momentum, cosine from `start` (step 0) to `end` (last step)."""
    steps = np.arange(total_steps, dtype=np.float64)
    denom = max(total_steps - 1, 1)
    return end - (end - start) * (np.cos(math.pi * steps / denom) + 1.0) / 2.0
