"""Per-sample random numbers that do not depend on how a batch is split across processes.

Every random draw of a training step (augmentation parameters, mask noise) comes from a generator
seeded by (seed, step, micro-batch). Each draw is made for the whole global micro-batch and each
process keeps its own rows, so a run on N processes sees exactly the numbers a 1-process run
sees, and a resumed run sees exactly the numbers the interrupted one would have.
"""

from __future__ import annotations

import torch

_MIX = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from several integers (splitmix-style), stable across Python runs."""
    h = 0
    for p in parts:
        h = (h ^ (int(p) + _MIX[0] + (h << 6) + (h >> 2))) & 0xFFFFFFFFFFFFFFFF
        h = ((h ^ (h >> 30)) * _MIX[1]) & 0xFFFFFFFFFFFFFFFF
        h = ((h ^ (h >> 27)) * _MIX[2]) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


class BatchRandom:
    """Random draws for one global micro-batch of `global_size` samples; returns this rank's rows.

    Rows follow the DistributedSampler layout: rank r holds global positions r, r + W, r + 2W, ...
    """

    def __init__(
        self,
        seed: int,
        step: int,
        micro: int,
        global_size: int,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world: int = 1,
    ):
        if global_size % world:
            raise ValueError(f"global micro-batch {global_size} is not divisible by {world} processes")
        self.device = torch.device(device)
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(mix_seed(seed, step, micro))
        # Batch-wide choices (e.g. an order of operations) come from the CPU so using them
        # never waits for the accelerator.
        self.cpu_gen = torch.Generator()
        self.cpu_gen.manual_seed(mix_seed(seed, step, micro, 1))
        self.global_size = global_size
        self.rank = rank
        self.world = world

    @property
    def local_size(self) -> int:
        return self.global_size // self.world

    def _rows(self, full: torch.Tensor) -> torch.Tensor:
        return full if self.world == 1 else full[self.rank :: self.world]

    def uniform(self, *shape: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        full = torch.rand((self.global_size, *shape), generator=self.gen, device=self.device)
        return self._rows(full) * (high - low) + low

    def randint(self, high: int, *shape: int) -> torch.Tensor:
        full = torch.randint(high, (self.global_size, *shape), generator=self.gen, device=self.device)
        return self._rows(full)

    def shared_permutation(self, n: int) -> torch.Tensor:
        """One permutation for the whole batch (same on every rank)."""
        return torch.randperm(n, generator=self.cpu_gen)
