"""Training batches in a fixed, resumable order, split across processes like DistributedSampler.

Each epoch is one DistributedSampler permutation (seed + epoch). A global batch of G images per
optimiser step is cut into `accum` micro-batches, and each process takes every W-th image of a
micro-batch. Resuming at step k skips exactly the images steps 0..k-1 consumed, whatever the
number of processes was before.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, DistributedSampler

from unmasked.data import image_folder
from unmasked.data.augment import StoredImages
from unmasked.data.dataset import Split
from unmasked.data.workers import ignore_interrupts, user_errors_stay_one_line


class _Sized(torch.utils.data.Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n


class TrainBatches:
    def __init__(
        self,
        split: Split,
        global_batch: int,
        accum: int,
        device: torch.device,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        base_size: int = 28,
        channels: int = 1,
        num_workers: int = 0,
        strict: bool = False,
    ):
        if global_batch % (accum * world):
            raise ValueError(
                f"batch size {global_batch} must be divisible by accumulation steps x processes = {accum * world}"
            )
        self.split = split
        self.global_batch = global_batch
        self.accum = accum
        self.micro_global = global_batch // accum
        self.local = self.micro_global // world
        self.device = device
        self.seed = seed
        self.rank = rank
        self.world = world
        self.num_workers = num_workers
        self.skipped: list[str] = []
        self.steps_per_epoch = len(split) // global_batch
        if self.steps_per_epoch < 1:
            raise ValueError(f"batch size {global_batch} is larger than the {len(split)} training images")
        self.images, self.extents = None, None
        if split.in_memory:
            # On an accelerator the whole uint8 set lives there when it is small enough.
            self.images = split.images
            self.extents = split.extents
            # Otherwise batches are gathered on the host and copied (pinning the whole set would not
            # help: the gather makes a new pageable tensor, and pinning gigabytes can fail).
            if device.type == "cuda" and split.images.numel() < 0.25 * torch.cuda.mem_get_info(device)[0]:
                self.images = split.images.to(device)
        else:
            self.decoded = image_folder.DecodedImages(split.files, base_size, channels, strict=strict,
                                                      max_aspect=split.max_aspect)

    def set_accum(self, accum: int) -> None:
        """Cut each global batch into `accum` micro-batches instead (--accum-steps auto)."""
        if self.global_batch % (accum * self.world):
            raise ValueError(f"batch size {self.global_batch} must be divisible by accumulation steps x "
                             f"processes = {accum * self.world}")
        self.accum, self.micro_global = accum, self.global_batch // accum
        self.local = self.micro_global // self.world

    def _local_indices(self, epoch: int, start_step: int) -> list[int]:
        sampler = DistributedSampler(
            _Sized(len(self.split)), num_replicas=self.world, rank=self.rank, shuffle=True,
            seed=self.seed, drop_last=True,
        )
        sampler.set_epoch(epoch)
        per_step = self.global_batch // self.world
        idx = list(sampler)
        return idx[start_step * per_step : self.steps_per_epoch * per_step]

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[torch.Tensor]:
        """Micro-batches (uint8, on the device) for steps start_step.. of this epoch, in order: tensors,
        or StoredImages where the images keep their aspect ratio."""
        idx = self._local_indices(epoch, start_step)
        if self.images is not None:
            idx_t = torch.tensor(idx, dtype=torch.long)
            if self.images.device != idx_t.device:
                idx_t = idx_t.to(self.images.device)
            for i in range(0, len(idx), self.local):
                rows = idx_t[i : i + self.local]
                batch = self.images[rows]
                if self.extents is not None:
                    batch = StoredImages(batch, self.extents[rows.to(self.extents.device)])
                yield batch.to(self.device, non_blocking=True)
            return
        loader = DataLoader(
            torch.utils.data.Subset(self.decoded, idx),
            batch_size=self.local,
            shuffle=False,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            collate_fn=image_folder.collate_decoded,
            worker_init_fn=ignore_interrupts,
            persistent_workers=False,
            prefetch_factor=4 if self.num_workers > 0 else None,
        )
        with user_errors_stay_one_line():
            for images, bad in loader:
                if bad:
                    image_folder.warn_bad(bad)
                    self.skipped += bad
                yield images.to(self.device, non_blocking=True)
