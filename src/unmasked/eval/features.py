"""Frozen features (CLS and mean-pooled patch tokens) for every image of a split."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from unmasked.data import image_folder
from unmasked.data.augment import eval_view
from unmasked.data.dataset import Split
from unmasked.data.workers import ignore_interrupts
from unmasked.models.vit import ViTEncoder, encoder_tokens, num_prefix_tokens, pooled_features


def iterate_split(split: Split, batch_size: int, base: int, channels: int, num_workers: int = 0):
    """(uint8 batch, indices of its images in the split), in order; unreadable files are left out."""
    if split.in_memory:
        for i in range(0, len(split), batch_size):
            yield split.squares(i, i + batch_size), torch.arange(i, min(i + batch_size, len(split)))
        return
    ds = image_folder.IndexedImages(split.files, base, channels)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=num_workers,
                                         collate_fn=image_folder.collate_indexed, worker_init_fn=ignore_interrupts)
    for images, idx, bad in loader:
        image_folder.warn_bad(bad)
        if images is not None:
            yield images, idx


def feature_autocast(device: torch.device) -> torch.dtype | None:
    """The autocast dtype of evaluation features: bf16 on a GPU; None on a CPU, where they stay
    float32 whatever precision training used. The result files and feature-cache keys record it
    (eval.common.feature_precision)."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else None


@torch.no_grad()
def extract_features(
    encoder: ViTEncoder,  # or any timm VisionTransformer with .spec
    split: Split,
    mean,
    std,
    crop_pct: float,
    device: torch.device,
    batch_size: int = 256,
    base: int = 28,
    channels: int = 1,
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "features",
    size: int | None = None,
) -> dict[str, torch.Tensor]:
    """-> {"cls": (N, D), "mean": (N, D)} float32 on the CPU, and "index": which images of the split
    they belong to (all of them, unless unreadable files were left out). At a `size` other than the
    encoder's own, the position embedding is resampled bicubically to the grid (as DINOv2 and timm do)."""
    encoder = encoder.to(device).eval()
    size = size or encoder.spec.img_size
    prefix = num_prefix_tokens(encoder)
    out: dict[str, list[torch.Tensor]] = {"cls": [], "mean": [], "index": []}
    autocast = feature_autocast(device)
    n_batches = (len(split) + batch_size - 1) // batch_size
    for images, idx in tqdm(iterate_split(split, batch_size, base, channels, num_workers), total=n_batches,
                            desc=desc, unit="batch", disable=not progress, leave=False):
        out["index"].append(idx)
        x = eval_view(images.to(device, non_blocking=True), size, mean, std, crop_pct)
        with torch.autocast(device.type, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
            tokens = encoder_tokens(encoder, x)
        for k, v in pooled_features(tokens.float(), prefix).items():
            out[k].append(v.cpu())
    return {k: torch.cat(v) for k, v in out.items()}
