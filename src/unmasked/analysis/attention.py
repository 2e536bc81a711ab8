"""Attention weights recomputed from each block's own projections, in float32.

Fused attention kernels (SDPA) do not return their weights, so a forward hook on every block's
attention module takes the block's normalised input and recomputes softmax(q k^T * scale) from
its qkv projection (and q/k norms, if any).
"""

from __future__ import annotations

import torch

from unmasked.errors import UserError
from unmasked.models.vit import ViTEncoder, encoder_tokens


def check_attention(encoder) -> None:
    """Refuse, in one line, an attention block whose weights cannot be recomputed from a fused qkv."""
    for i, blk in enumerate(encoder.blocks):
        attn = getattr(blk, "attn", None)
        if not all(hasattr(attn, a) for a in ("qkv", "num_heads", "scale")):
            raise UserError(f"block {i + 1} of the encoder has a {type(attn).__name__} attention without a fused "
                            "qkv projection; attention analyses need timm's Attention")


def _attention_from_input(attn_module, x: torch.Tensor) -> torch.Tensor:
    b, n, _ = x.shape
    heads = attn_module.num_heads
    qkv = torch.nn.functional.linear(x.float(), attn_module.qkv.weight.float(),
                                     None if attn_module.qkv.bias is None else attn_module.qkv.bias.float())
    qkv = qkv.reshape(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k = qkv[0], qkv[1]
    q = attn_module.q_norm(q) if hasattr(attn_module, "q_norm") else q
    k = attn_module.k_norm(k) if hasattr(attn_module, "k_norm") else k
    return torch.softmax((q * attn_module.scale) @ k.transpose(-2, -1), dim=-1)


@torch.no_grad()
def attention_weights(encoder: ViTEncoder, x: torch.Tensor, layers: list[int] | None = None) -> list[torch.Tensor]:
    """Softmax attention of every (or the chosen) layer on all tokens: list of (B, H, P + L, P + L), P the
    prefix tokens (CLS and registers), for our encoder or any timm ViT with timm's Attention blocks."""
    check_attention(encoder)
    layers = list(range(len(encoder.blocks))) if layers is None else layers
    maps: dict[int, torch.Tensor] = {}
    hooks = []
    for i in layers:
        attn = encoder.blocks[i].attn

        def hook(module, inputs, output, i=i):
            maps[i] = _attention_from_input(module, inputs[0])

        hooks.append(attn.register_forward_hook(hook))
    try:
        encoder_tokens(encoder, x)
    finally:
        for h in hooks:
            h.remove()
    return [maps[i] for i in layers]


def patch_attention(attn: torch.Tensor, num_prefix: int = 1) -> torch.Tensor:
    """Drop the prefix (CLS and register) rows and columns and renormalise each row to sum to 1."""
    a = attn[..., num_prefix:, num_prefix:]
    return a / a.sum(dim=-1, keepdim=True).clamp(min=1e-12)
