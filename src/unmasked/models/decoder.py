"""MAE decoder: embeds visible latents, fills hidden positions with a mask token, predicts pixels."""

from functools import partial

import torch
import torch.nn as nn
from timm.models.vision_transformer import Block

from unmasked.models.patches import gather_tokens
from unmasked.models.pos_embed import sincos_2d
from unmasked.models.vit import init_mae_


class MAEDecoder(nn.Module):
    def __init__(
        self,
        grid: int,
        embed_dim: int,
        decoder_dim: int,
        depth: int,
        num_heads: int,
        patch_dim: int,
        mlp_ratio: float = 4.0,
    ):
        super().__init__()
        self.embed = nn.Linear(embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.register_buffer("pos_embed", sincos_2d(decoder_dim, grid, cls_token=True), persistent=False)
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.Sequential(
            *[Block(decoder_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm) for _ in range(depth)]
        )
        self.norm = norm(decoder_dim)
        self.pred = nn.Linear(decoder_dim, patch_dim)
        init_mae_(self)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor, num_prefix: int = 1) -> torch.Tensor:
        """latent (B, prefix + K, D) in shuffled order, CLS first; ids_restore (B, L) -> predictions
        (B, L, patch_dim). The encoder's register tokens (prefix tokens after CLS) are dropped."""
        x = self.embed(latent)
        b, length = ids_restore.shape
        fill = self.mask_token.to(x.dtype).expand(b, length - (x.shape[1] - num_prefix), -1)
        patches = gather_tokens(torch.cat([x[:, num_prefix:], fill], dim=1), ids_restore)
        x = torch.cat([x[:, :1], patches], dim=1) + self.pos_embed.to(x.dtype)
        x = self.norm(self.blocks(x))
        return self.pred(x[:, 1:])
