"""Per-step schedules: the value at optimiser step i, computed when asked.

A run's length can be huge (`--epochs 1e9 --steps 2`), so no schedule allocates an array sized by
the run: a `Schedule` holds a formula and its length, and indexing computes one value. A slice
materialises only the steps it names (tests and plots).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np


class Schedule:
    """`sched[i]` or `sched(i)`: the value at step i (negative i counts from the end)."""

    def __init__(self, fn: Callable[[int], float], length: int):
        self._fn = fn
        self.length = int(length)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i):
        if isinstance(i, slice):
            return np.array([self._fn(j) for j in range(*i.indices(self.length))], dtype=np.float64)
        i = int(i)
        if i < 0:
            i += self.length
        if not 0 <= i < self.length:
            raise IndexError(f"step {i} outside the schedule's {self.length} steps")
        return float(self._fn(i))

    def __call__(self, i: int) -> float:
        return self[i]

    def __iter__(self):
        return (self[i] for i in range(self.length))


def constant(value: float, total_steps: int) -> Schedule:
    return Schedule(lambda i: value, total_steps)


def cosine(start: float, end: float, total_steps: int) -> Schedule:
    """Half-cycle cosine from `start` (step 0) to `end` (last step)."""
    denom = max(total_steps - 1, 1)
    return Schedule(lambda i: end - (end - start) * (math.cos(math.pi * i / denom) + 1.0) / 2.0, total_steps)


def lr_schedule(peak: float, total_steps: int, warmup_steps: int, min_lr: float = 0.0) -> Schedule:
    """Linear warm-up from 0 to `peak`, then half-cycle cosine down to `min_lr` (MAE's recipe)."""
    decay = max(total_steps - warmup_steps, 1)

    def value(i: int) -> float:
        if i < warmup_steps:
            return peak * i / max(warmup_steps, 1)
        t = (i - warmup_steps) / decay
        return min_lr + (peak - min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))

    return Schedule(value, total_steps)


def momentum_schedule(start: float, total_steps: int, end: float = 1.0) -> Schedule:
    """EMA momentum, cosine from `start` (step 0) to `end` (last step)."""
    return cosine(start, end, total_steps)
