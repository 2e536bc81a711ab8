"""Patchify / unpatchify in the MAE layout: each patch flattened as (row, col, channel)."""

import torch


def patchify(imgs: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, L, p*p*C) with L = (H/p)*(W/p), patches in row-major order."""
    b, c, h, w = imgs.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not divisible by patch size {p}")
    x = imgs.reshape(b, c, h // p, p, w // p, p)
    x = x.permute(0, 2, 4, 3, 5, 1)  # b, gh, gw, p, p, c
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(patches: torch.Tensor, patch_size: int, channels: int) -> torch.Tensor:
    """Inverse of patchify for square grids: (B, L, p*p*C) -> (B, C, H, W)."""
    b, n, d = patches.shape
    p = patch_size
    g = int(round(n**0.5))
    if g * g != n or d != p * p * channels:
        raise ValueError(f"cannot unpatchify {tuple(patches.shape)} with patch {p}, {channels} channels")
    x = patches.reshape(b, g, g, p, p, channels).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, channels, g * p, g * p)


def normalize_patches(patches: torch.Tensor, eps: float = 1e-6):
    """Per-patch normalisation used by norm_pix_loss. Returns (normalised, mean, std)."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)  # unbiased, as in MAE
    std = (var + eps).sqrt()
    return (patches - mean) / std, mean, std


def gather_tokens(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Select tokens per sample: x (B, L, D), ids (B, K) -> (B, K, D)."""
    return torch.gather(x, 1, ids.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
