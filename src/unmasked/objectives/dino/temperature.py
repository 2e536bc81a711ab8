"""The teacher temperature per optimiser step: linear warm-up, then constant (DINO)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WarmupConstant:
    """start -> end linearly over `warmup_steps`, then end. Computed per step (no array), so a
    schedule that spans 1e9 epochs costs nothing."""

    start: float
    end: float
    warmup_steps: int

    def __call__(self, step: int) -> float:
        if step >= self.warmup_steps:
            return self.end
        return self.start + (self.end - self.start) * step / self.warmup_steps

    def __getitem__(self, step: int) -> float:
        return self(step)
