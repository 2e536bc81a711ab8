"""Random token masking: MAE's single visible set and LUT's two disjoint visible sets."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def num_visible(num_patches: int, mask_ratio: float) -> int:
    """K = int(L * (1 - r)), the number of visible tokens per view."""
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"mask ratio must be in (0, 1), got {mask_ratio}")
    k = int(num_patches * (1.0 - mask_ratio))
    if k < 1:
        raise ValueError(
            f"mask ratio {mask_ratio} leaves no visible token out of {num_patches} patches"
        )
    return k


def check_lut_mask_ratio(mask_ratio: float) -> None:
    if mask_ratio < 0.5:
        raise ValueError(
            f"LUT needs mask ratio >= 0.5 so that its two visible sets are disjoint, got {mask_ratio}"
        )


@dataclass
class Mask:
    ids_keep: torch.Tensor  # (B, K) visible positions
    ids_restore: torch.Tensor  # (B, L) un-shuffle for the decoder
    mask: torch.Tensor  # (B, L) float, 1 = hidden (loss counted), 0 = visible


def _mask_from_shuffle(ids_shuffle: torch.Tensor, keep: int) -> Mask:
    b, length = ids_shuffle.shape
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones(b, length, device=ids_shuffle.device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return Mask(ids_shuffle[:, :keep], ids_restore, mask)


def random_mask(noise: torch.Tensor, mask_ratio: float) -> Mask:
    """MAE per-sample masking: keep the first K positions of argsort(noise)."""
    keep = num_visible(noise.shape[1], mask_ratio)
    return _mask_from_shuffle(torch.argsort(noise, dim=1), keep)


def lut_masks(noise: torch.Tensor, mask_ratio: float) -> tuple[Mask, torch.Tensor]:
    """LUT: one permutation per sample; view 1 keeps [0, K), view 2 keeps [K, 2K).

    Returns the view-1 mask (for reconstruction) and the view-2 visible ids.
    """
    check_lut_mask_ratio(mask_ratio)
    keep = num_visible(noise.shape[1], mask_ratio)
    ids_shuffle = torch.argsort(noise, dim=1)
    return _mask_from_shuffle(ids_shuffle, keep), ids_shuffle[:, keep : 2 * keep]
