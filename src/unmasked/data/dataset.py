"""Resolve `--data` to train / held-out splits of uint8 images, in memory when they fit."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from unmasked.data import fashion_mnist, image_folder
from unmasked.data.workers import ignore_interrupts
from unmasked.errors import UserError


@dataclass
class Split:
    """N images as uint8 (N, C, H, W) in memory, or as files decoded on the fly."""

    images: torch.Tensor | None = None
    files: list[Path] | None = None
    labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.images) if self.images is not None else len(self.files)

    @property
    def in_memory(self) -> bool:
        return self.images is not None

    def subset(self, idx: np.ndarray) -> Split:
        idx_t = torch.as_tensor(idx, dtype=torch.long)
        return Split(
            images=self.images[idx_t] if self.images is not None else None,
            files=[self.files[i] for i in idx] if self.files is not None else None,
            labels=self.labels[idx_t] if self.labels is not None else None,
        )


@dataclass
class ImageData:
    name: str  # "fashion-mnist" or the folder path
    channels: int
    base_size: int  # stored images are base_size x base_size
    classes: list[str] | None
    train: Split
    heldout: Split | None
    heldout_name: str = "test"
    skipped: list[str] = field(default_factory=list)
    train_files: list[Path] | None = None  # an image folder's training files as scanned (before decoding)

    @property
    def labeled(self) -> bool:
        return self.classes is not None and self.heldout is not None and len(self.heldout) > 0


def is_fashion_mnist(data: str) -> bool:
    if data.lower().replace("_", "-") in (fashion_mnist.NAME, "fmnist"):
        return True
    p = Path(data)
    return p.is_dir() and fashion_mnist.idx_root(p) is not None


def subset_indices(n: int, k: int | None, seed: int) -> np.ndarray | None:
    """A reproducible random subset of k of n indices (sorted), or None for all."""
    if k is not None and k < 1:
        raise UserError(f"--subset must be a positive number of images, got {k}")
    if k is not None and k > n:
        warnings.warn(f"--subset {k} is more than the {n} training images; using all {n}", stacklevel=2)
    if k is None or k >= n:
        return None
    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(n)[:k])


def load_data(
    data: str,
    *,
    base_size: int | None = None,
    channels: int | None = None,
    subset: int | None = None,
    subset_seed: int = 0,
    cache_gb: float = 8.0,
    num_workers: int = 0,
    strict: bool = False,
    unlabeled: bool = False,
    val_fraction: float = 0.1,
    progress: bool = True,
    max_image_pixels: int | None = None,
) -> ImageData:
    if max_image_pixels is not None:
        image_folder.set_max_image_pixels(max_image_pixels)
    if is_fashion_mnist(data):
        root = None if data.lower().replace("_", "-") in (fashion_mnist.NAME, "fmnist") else data
        fm = fashion_mnist.load(root)
        train = Split(torch.from_numpy(fm["train_images"].copy()), labels=torch.from_numpy(fm["train_labels"]))
        test = Split(torch.from_numpy(fm["test_images"].copy()), labels=torch.from_numpy(fm["test_labels"]))
        idx = subset_indices(len(train), subset, subset_seed)
        if idx is not None:
            train = train.subset(idx)
        if channels == 3:
            train.images = train.images.expand(-1, 3, -1, -1).contiguous()
            test.images = test.images.expand(-1, 3, -1, -1).contiguous()
        return ImageData(
            name=fashion_mnist.NAME,
            channels=train.images.shape[1],
            base_size=28,
            classes=list(fashion_mnist.CLASSES),
            train=train,
            heldout=test,
            heldout_name="test",
        )

    index = image_folder.scan(data, unlabeled=unlabeled, val_fraction=val_fraction, seed=0)
    if base_size is None:
        raise ValueError("base_size is required for image folders")
    train_files, train_labels = index.train.files, index.train.labels
    idx = subset_indices(len(train_files), subset, subset_seed)
    if idx is not None:
        train_files = [train_files[i] for i in idx]
        train_labels = [train_labels[i] for i in idx] if train_labels is not None else None
    ch = channels or image_folder.guess_channels(train_files)
    splits = {"train": (train_files, train_labels)}
    if index.heldout is not None:
        splits["heldout"] = (index.heldout.files, index.heldout.labels)
    total = sum(len(f) for f, _ in splits.values())
    fits = total * ch * base_size * base_size <= cache_gb * 1e9
    out, skipped = {}, []
    for key, (files, labels) in splits.items():
        lab = torch.tensor(labels, dtype=torch.long) if labels is not None else None
        if fits:
            images, keep, bad = decode_all(files, base_size, ch, num_workers, strict, progress, f"decoding {key}")
            skipped += bad
            if len(keep) == 0:
                raise UserError(f"{data}: none of the {len(files)} {key} images could be decoded; first error: {bad[0]}")
            out[key] = Split(images=images, labels=lab[keep] if lab is not None else None)
        else:
            out[key] = Split(files=list(files), labels=lab)
    return ImageData(
        name=str(Path(data)),
        channels=ch,
        base_size=base_size,
        classes=index.classes,
        train=out["train"],
        heldout=out.get("heldout"),
        heldout_name="val",
        skipped=skipped,
        train_files=list(train_files),
    )


def decode_all(files, base, channels, num_workers, strict, progress, desc):
    """Decode every file once into one uint8 tensor; returns (images, kept indices, bad messages)."""
    ds = image_folder.DecodedImages(files, base, channels, strict=strict, substitute=False)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=64, num_workers=num_workers, collate_fn=image_folder.collate_keep_none,
        worker_init_fn=ignore_interrupts,
    )
    images = torch.empty(len(files), channels, base, base, dtype=torch.uint8)
    keep, bad, i = [], [], 0
    for items in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
        for x, msgs in items:
            if x is not None:
                images[len(keep)] = x
                keep.append(i)
            bad += list(msgs)
            i += 1
    image_folder.warn_bad(bad)
    return images[: len(keep)], torch.tensor(keep, dtype=torch.long), bad


def channel_stats(split: Split, base: int, channels: int, max_images: int = 10_000) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the training images (a fixed, evenly spaced sample)."""
    n = len(split)
    step = max(1, math.ceil(n / max_images))
    if split.in_memory:
        x = split.images[::step].float().div_(255.0)
    else:
        ds = image_folder.DecodedImages(split.files[::step][:256], base, channels)
        x = torch.stack([ds[i][0] for i in range(len(ds))]).float().div_(255.0)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp(min=1e-3)
    return [round(float(v), 4) for v in mean], [round(float(v), 4) for v in std]
