"""The raw-pixel reference: the rows a protocol (kNN, linear probe) runs on instead of features.

An encoder's number means little without it: on Fashion-MNIST raw pixels already reach 84.6%
kNN20 (L2-normalised [0,1] pixels, T = 0.07). The pixel rows depend only on the dataset, the
evaluation view and the protocol's settings, so each is computed once and cached as a small JSON
file in a per-user folder ($UNMASKED_CACHE, else $XDG_CACHE_HOME/unmasked, else
~/.cache/unmasked).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from unmasked.data.augment import to_float
from unmasked.data.dataset import ImageData, Split
from unmasked.eval.cache_key import split_fingerprint
from unmasked.eval.features import iterate_split
from unmasked.eval.view import EvalView
from unmasked.files import atomic_write_text


def cache_dir() -> Path:
    env = os.environ.get("UNMASKED_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "unmasked"


@torch.no_grad()
def pixel_rows(split: Split, view: EvalView, channels: int, batch_size: int = 1024,
               num_workers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C*S*S) uint8 pixels of the evaluation view (geometry only, no mean/std) and their labels."""
    rows, labels = [], []
    resize = round(view.img_size / view.crop_pct)
    for images, idx in iterate_split(split, batch_size, view.base_size, channels, num_workers):
        x = images
        if x.shape[-1] != resize or x.shape[-2] != resize:  # resampled views are re-quantised to 8 bits
            x = F.interpolate(to_float(x), size=(resize, resize), mode="bilinear", antialias=True,
                              align_corners=False).mul_(255).round_().clamp_(0, 255).to(torch.uint8)
        o = (resize - view.img_size) // 2
        rows.append(x[..., o : o + view.img_size, o : o + view.img_size].reshape(len(x), -1))
        labels.append(split.labels[idx])
    return torch.cat(rows), torch.cat(labels)


def _fingerprint(ds: ImageData, view: EvalView, protocol: dict) -> str:
    """What the images and labels are (content, as the encoder feature cache keys them: replaced
    pixels under the same name recompute), which view, which protocol settings."""
    h = hashlib.sha1()
    h.update(json.dumps([ds.channels, view.describe(), protocol], sort_keys=True).encode())
    for part in (ds.train, ds.heldout):
        h.update(split_fingerprint(part).encode())
    return h.hexdigest()[:20]


def cached_pixel_result(ds: ImageData, view: EvalView, protocol: dict, compute) -> dict:
    """compute(train_x, train_y, test_x, test_y) -> result, run once per dataset + view + protocol."""
    path = cache_dir() / "pixels" / f"{protocol['protocol']}-{_fingerprint(ds, view, protocol)}.json"
    try:
        return {**json.loads(path.read_text()), "cached": True}
    except (OSError, ValueError):
        pass  # not computed yet, or a damaged file: compute again
    tr_x, tr_y = pixel_rows(ds.train, view, ds.channels)
    te_x, te_y = pixel_rows(ds.heldout, view, ds.channels)
    result = {"input": f"raw pixels of the evaluation view in [0, 1] ({tr_x.shape[1]} values)",
              **compute(tr_x.float().div_(255), tr_y, te_x.float().div_(255), te_y)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    except OSError:
        pass  # caching is an optimisation; an unwritable cache folder only costs the recomputation
    return {**result, "cached": False}
