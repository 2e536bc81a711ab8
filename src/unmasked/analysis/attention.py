"""Attention weights recomputed from each block's own projections, in float32.

Fused attention kernels (SDPA) do not return their weights, so a forward hook on every block's
attention module takes the block's normalised input and recomputes softmax(q k^T * scale) from
its qkv projection (and q/k norms, if any).
"""

from __future__ import annotations

import torch

from unmasked.models.vit import ViTEncoder


def _attention_from_input(attn_module, x: torch.Tensor) -> torch.Tensor:
    b, n, _ = x.shape
    heads = attn_module.num_heads
    qkv = torch.nn.functional.linear(x.float(), attn_module.qkv.weight.float(),
                                     None if attn_module.qkv.bias is None else attn_module.qkv.bias.float())
    qkv = qkv.reshape(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k = qkv[0], qkv[1]
    q, k = attn_module.q_norm(q), attn_module.k_norm(k)
    return torch.softmax((q * attn_module.scale) @ k.transpose(-2, -1), dim=-1)


@torch.no_grad()
def attention_weights(encoder: ViTEncoder, x: torch.Tensor, layers: list[int] | None = None) -> list[torch.Tensor]:
    """Softmax attention of every (or the chosen) layer on all tokens: list of (B, H, 1 + L, 1 + L)."""
    layers = list(range(len(encoder.blocks))) if layers is None else layers
    maps: dict[int, torch.Tensor] = {}
    hooks = []
    for i in layers:
        attn = encoder.blocks[i].attn

        def hook(module, inputs, output, i=i):
            maps[i] = _attention_from_input(module, inputs[0])

        hooks.append(attn.register_forward_hook(hook))
    try:
        encoder.forward_features(x)
    finally:
        for h in hooks:
            h.remove()
    return [maps[i] for i in layers]


def patch_attention(attn: torch.Tensor, num_prefix: int = 1) -> torch.Tensor:
    """Drop the CLS row and column and renormalise each row to sum to 1: (..., L, L)."""
    a = attn[..., num_prefix:, num_prefix:]
    return a / a.sum(dim=-1, keepdim=True).clamp(min=1e-12)
