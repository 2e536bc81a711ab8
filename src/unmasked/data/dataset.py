"""Resolve `--data` to train / held-out splits of uint8 images, in memory when they fit."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from unmasked.data import fashion_mnist, image_folder
from unmasked.data.augment import centre_squares
from unmasked.data.workers import ignore_interrupts, user_errors_stay_one_line
from unmasked.errors import UserError
from unmasked.notes import note, warn


@dataclass
class Split:
    """N images as uint8 (N, C, H, W) in memory, or as files decoded on the fly.

    Training splits of image folders keep each image's aspect ratio (up to `max_aspect`): in memory,
    `extents` (N, 2) gives each image's true (h, w) in the buffer (see data/image_folder.py); None
    means every image fills it (square data). Streamed files are decoded the same way."""

    images: torch.Tensor | None = None
    files: list[Path] | None = None
    labels: torch.Tensor | None = None
    extents: torch.Tensor | None = None
    max_aspect: float | None = None  # how files (and the in-memory images) were decoded

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
            extents=self.extents[idx_t] if self.extents is not None else None,
            max_aspect=self.max_aspect,
        )

    def squares(self, start: int, stop: int) -> torch.Tensor:
        """Images start..stop (in memory) as the centre squares the evaluation decode keeps."""
        images = self.images[start:stop]
        return images if self.extents is None else centre_squares(images, self.extents[start:stop])


@dataclass
class ImageData:
    name: str  # "fashion-mnist" or the folder path
    channels: int
    base_size: int  # stored images have this shorter side (evaluation: base_size x base_size)
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
        warn(f"--subset {k} is more than the {n} training images; using all {n}")
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
    keep_aspect: bool = False,
    max_aspect: float = image_folder.MAX_ASPECT,
) -> ImageData:
    """keep_aspect: the training split of an image folder keeps each image whole up to max_aspect:1
    (for augmentations that crop from the whole image); the held-out split is always decoded to
    the centre square of the evaluation view."""
    if max_image_pixels is not None:
        image_folder.set_max_image_pixels(max_image_pixels)
    if is_fashion_mnist(data):
        return _fashion_mnist_data(data, channels, subset, subset_seed)
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
    aspect = {"train": max_aspect if keep_aspect else None, "heldout": None}
    side = {k: image_folder.buffer_side(base_size, a) if a else base_size for k, a in aspect.items()}
    # the cache rule counts each image at its buffer's full size (a whole 4:3 image in either
    # orientation needs side x side); trimming the buffer copies it, so it is trimmed only when
    # the copy fits in what --cache-gb leaves beside that count (see decode_all)
    total = sum(len(f) * side[k] ** 2 for k, (f, _) in splits.items()) * ch
    fits = total <= cache_gb * 1e9
    out, skipped = {}, []
    for key, (files, labels) in splits.items():
        out[key] = _folder_split(data, key, files, labels, base_size, ch, fits, aspect[key], num_workers, strict,
                                 progress, skipped, spare_bytes=cache_gb * 1e9 - total)
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


def _fashion_mnist_data(data: str, channels: int | None, subset: int | None, subset_seed: int) -> ImageData:
    """Fashion-MNIST from its IDX files: the 60,000 training images (or a subset) and the 10,000 test."""
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


def _folder_split(data: str, key: str, files, labels, base_size: int, ch: int, fits: bool, aspect: float | None,
                  num_workers: int, strict: bool, progress: bool, skipped: list,
                  spare_bytes: float = math.inf) -> Split:
    """One split of an image folder: decoded into memory when the cache holds it (undecodable files
    appended to `skipped`), else decoded from its files on each read."""
    lab = torch.tensor(labels, dtype=torch.long) if labels is not None else None
    if fits:
        images, keep, bad, extents = decode_all(files, base_size, ch, num_workers, strict, progress,
                                                f"decoding {key}", aspect, spare_bytes)
        skipped += bad
        if len(keep) == 0:
            raise UserError(f"{data}: none of the {len(files)} {key} images could be decoded; first error: {bad[0]}")
        return Split(images=images, labels=lab[keep] if lab is not None else None, extents=extents,
                     max_aspect=aspect)
    split = Split(files=list(files), labels=lab, max_aspect=aspect)
    if aspect:
        _note_long_images(files, base_size, aspect)
    return split


def decode_all(files, base, channels, num_workers, strict, progress, desc, max_aspect=None, spare_bytes=math.inf):
    """Decode every file once into one uint8 tensor; returns (images, kept indices, bad messages,
    extents). With max_aspect the buffer is trimmed to the largest extent decoded when the trimmed
    copy fits in `spare_bytes` (while it is made, both exist), else kept side x side; extents is
    None when every image is a square filling it (the square decode's tensor, bit for bit)."""
    ds = image_folder.DecodedImages(files, base, channels, strict=strict, substitute=False, max_aspect=max_aspect)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=64, num_workers=num_workers, collate_fn=image_folder.collate_keep_none,
        worker_init_fn=ignore_interrupts,
    )
    side = image_folder.buffer_side(base, max_aspect) if max_aspect else base
    images = torch.empty(len(files), channels, side, side, dtype=torch.uint8)
    extents = torch.empty(len(files), 2, dtype=torch.long)
    keep, bad, i, n_cut = [], [], 0, 0
    with user_errors_stay_one_line():
        for items in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
            for x, msgs in items:
                if x is not None:
                    if max_aspect:
                        x, extents[len(keep)], n_cut = x[0], torch.tensor(x[1]), n_cut + x[2]
                    images[len(keep)] = x
                    keep.append(i)
                bad += list(msgs)
                i += 1
    image_folder.warn_bad(bad)
    images, keep_t = images[: len(keep)], torch.tensor(keep, dtype=torch.long)
    if not max_aspect:
        return images, keep_t, bad, None
    extents = extents[: len(keep)]
    if len(keep):
        _warn_long(n_cut, len(keep), max_aspect)
        h, w = int(extents[:, 0].max()), int(extents[:, 1].max())
        if (h, w) != (side, side) and len(keep) * channels * h * w <= spare_bytes:
            images = images[:, :, :h, :w].contiguous()  # e.g. all landscape: base x side, not side x side
    # square images filling a square buffer are the square decode; a folder of one non-square shape
    # (e.g. every photo 640 x 480) keeps its extents, so that views crop it rather than stretch it
    if len(keep) and images.shape[-2] == images.shape[-1] and bool(
            (extents[:, 0] == images.shape[-2]).all() and (extents[:, 1] == images.shape[-1]).all()):
        extents = None
    return images, keep_t, bad, extents


def _aspect_text(max_aspect: float) -> str:
    return "4:3" if abs(max_aspect - 4 / 3) < 1e-9 else f"{max_aspect:g}:1"


def _warn_long(n_long: int, n: int, max_aspect: float) -> None:
    """Said once per run: how many images were longer than the bound and so centre-cropped to it."""
    if n_long:
        note(f"{n_long:,} of {n:,} training images are longer than {_aspect_text(max_aspect)}: their "
             f"longer side is centre-cropped to {_aspect_text(max_aspect)} (the rest are seen whole)")


def _note_long_images(files, base: int, max_aspect: float, sample: int = 200) -> None:
    """Streamed files: the same notice, estimated from the headers of an evenly spaced sample."""
    step = max(1, len(files) // sample)
    picked, n_long = files[::step][:sample], 0
    for p in picked:
        try:
            with Image.open(p) as im:
                n_long += max(im.size) > max_aspect * min(im.size) + 1
        except Exception:  # noqa: BLE001 - the decoder names unreadable files later
            continue
    if n_long:
        note(f"about {n_long / len(picked):.0%} of the training images (from {len(picked)} sampled) are "
             f"longer than {_aspect_text(max_aspect)}: their longer side is centre-cropped to it")


def channel_stats(split: Split, base: int, channels: int, max_images: int = 10_000) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the training images (a fixed, evenly spaced sample)."""
    n = len(split)
    step = max(1, math.ceil(n / max_images))
    if split.in_memory:
        x = split.images[::step]
        x = (x if split.extents is None else centre_squares(x, split.extents[::step])).float().div_(255.0)
    else:
        ds = image_folder.DecodedImages(split.files[::step][:256], base, channels)
        x = torch.stack([ds[i][0] for i in range(len(ds))]).float().div_(255.0)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp(min=1e-3)
    return [round(float(v), 4) for v in mean], [round(float(v), 4) for v in std]
