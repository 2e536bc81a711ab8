"""ViT encoder: a timm VisionTransformer with fixed sin-cos or learned positions, optional LayerScale
and register tokens, and a visible-token path.

The encoder *is* a `timm.models.vision_transformer.VisionTransformer`, so its state dict loads
into `timm.create_model(...)`/`VisionTransformer(...)` of the same shape with strict=True, and it
keeps timm's API (forward_features, forward_head, set_grad_checkpointing, ...).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch.utils.checkpoint import checkpoint

from unmasked.models.patches import gather_tokens
from unmasked.models.pos_embed import sincos_2d

POS_EMBEDS = ("sincos", "learned")  # fixed 2-D sin-cos (MAE, LUT) or learned (DINOv2)

# timm's sizes: (width, depth, heads)
PRESETS: dict[str, tuple[int, int, int]] = {
    "vit_tiny": (192, 12, 3),
    "vit_small": (384, 12, 6),
    "vit_base": (768, 12, 12),
    "vit_large": (1024, 24, 16),
}


@dataclass(frozen=True)
class EncoderSpec:
    """Everything needed to rebuild an encoder (saved with checkpoints and exports)."""

    img_size: int
    patch_size: int
    in_chans: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.0
    # specs saved before these existed describe encoders without LayerScale and with sin-cos positions
    layer_scale: float = 0.0  # LayerScale's initial gamma (timm's init_values); 0: no LayerScale
    pos_embed: str = "sincos"
    # register tokens after CLS (timm's reg_tokens; a warm start from DINOv2 with registers); with
    # no_embed_class the prefix tokens have no position (timm's and DINOv2-with-registers' layout)
    reg_tokens: int = 0
    no_embed_class: bool = False

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid**2

    @property
    def num_prefix_tokens(self) -> int:
        return 1 + self.reg_tokens

    @property
    def pos_prefix_tokens(self) -> int:
        """Prefix tokens with a row in pos_embed (none with no_embed_class)."""
        return 0 if self.no_embed_class else self.num_prefix_tokens

    @property
    def patch_dim(self) -> int:
        return self.patch_size**2 * self.in_chans

    def timm_kwargs(self) -> dict:
        """Arguments for timm's VisionTransformer that give the same architecture (no head)."""
        return dict(
            img_size=self.img_size,
            patch_size=self.patch_size,
            in_chans=self.in_chans,
            embed_dim=self.embed_dim,
            depth=self.depth,
            num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
            qkv_bias=True,
            init_values=self.layer_scale or None,
            reg_tokens=self.reg_tokens,
            no_embed_class=self.no_embed_class,
            num_classes=0,
            global_pool="token",
        )

    def to_dict(self) -> dict:
        return asdict(self)


def encoder_spec(
    model: str,
    img_size: int,
    patch_size: int,
    in_chans: int,
    embed_dim: int | None = None,
    depth: int | None = None,
    num_heads: int | None = None,
    drop_path_rate: float = 0.0,
    layer_scale: float = 0.0,
    pos_embed: str = "sincos",
    reg_tokens: int = 0,
    no_embed_class: bool = False,
) -> EncoderSpec:
    if model not in PRESETS:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(PRESETS)}")
    if pos_embed not in POS_EMBEDS:
        raise ValueError(f"unknown position embedding {pos_embed!r}; choose one of {', '.join(POS_EMBEDS)}")
    w, d, h = PRESETS[model]
    return EncoderSpec(
        img_size=img_size,
        patch_size=patch_size,
        in_chans=in_chans,
        embed_dim=embed_dim or w,
        depth=depth or d,
        num_heads=num_heads or h,
        drop_path_rate=drop_path_rate,
        layer_scale=layer_scale,
        pos_embed=pos_embed,
        reg_tokens=reg_tokens,
        no_embed_class=no_embed_class,
    )


def sincos_table(spec: EncoderSpec, grid: int | tuple[int, int] | None = None) -> torch.Tensor:
    """The fixed sin-cos pos_embed of `spec`'s layout: zero rows for the prefix tokens that have a
    position (CLS, registers; none with no_embed_class), then the patch grid."""
    patches = sincos_2d(spec.embed_dim, spec.grid if grid is None else grid, cls_token=False)
    return torch.cat([patches.new_zeros(1, spec.pos_prefix_tokens, spec.embed_dim), patches], dim=1)


def init_mae_(module: nn.Module) -> None:
    """MAE initialisation: xavier-uniform Linear weights, zero biases, LayerNorm 1/0."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            if m.weight is not None:
                nn.init.ones_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class ViTEncoder(VisionTransformer):
    """timm ViT that can run on all tokens or on a per-sample subset of visible patches."""

    def __init__(self, spec: EncoderSpec):
        super().__init__(
            **spec.timm_kwargs(),
            drop_path_rate=spec.drop_path_rate,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
        )
        self.spec = spec
        if spec.pos_embed == "learned":
            nn.init.trunc_normal_(self.pos_embed, std=0.02)  # DINOv2's initialisation
        else:
            # Fixed sin-cos positions, kept as a (frozen) parameter so the state dict matches timm's.
            self.pos_embed.requires_grad_(False)
            with torch.no_grad():
                self.pos_embed.copy_(sincos_table(spec))
        self._init_mae()  # Linear and LayerNorm only: LayerScale's gammas keep their initial value

    def _init_mae(self) -> None:
        init_mae_(self.blocks)
        init_mae_(self.norm)
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))  # patch embedding treated as a Linear
        nn.init.zeros_(self.patch_embed.proj.bias)
        nn.init.normal_(self.cls_token, std=0.02)

    def patch_weight(self) -> torch.Tensor:
        """The conv patch embedding as a Linear over MAE-layout patches (p, p, C)."""
        w = self.patch_embed.proj.weight  # (D, C, p, p)
        return w.permute(0, 2, 3, 1).reshape(w.shape[0], -1)

    def embed_patches(self, patches: torch.Tensor, ids_keep: torch.Tensor | None = None):
        """(B, L, p*p*C) pixel patches -> (B, K, D) tokens with positions; gathers before embedding."""
        pos = self.pos_embed[:, self.spec.pos_prefix_tokens:, :]
        if ids_keep is not None:
            patches = gather_tokens(patches, ids_keep)
            pos = gather_tokens(pos.expand(patches.shape[0], -1, -1), ids_keep)
        return F.linear(patches, self.patch_weight(), self.patch_embed.proj.bias) + pos

    def prefix_tokens(self) -> torch.Tensor:
        """CLS then the register tokens, with their positions where they have one: (1, prefix, D)."""
        prefix = self.cls_token if self.reg_token is None else torch.cat([self.cls_token, self.reg_token], dim=1)
        n = self.spec.pos_prefix_tokens
        return prefix + self.pos_embed[:, :n, :] if n else prefix

    def forward_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Prepend CLS and registers, run the blocks and the final norm: (B, K, D) -> (B, prefix + K, D),
        as timm's forward_features orders them."""
        x = torch.cat([self.prefix_tokens().expand(tokens.shape[0], -1, -1), tokens], dim=1)
        x = self.norm_pre(x)
        if self.grad_checkpointing and torch.is_grad_enabled():
            for blk in self.blocks:
                x = checkpoint(blk, x, use_reentrant=False)
        else:
            x = self.blocks(x)
        return self.norm(x)

    def forward_visible(self, patches: torch.Tensor, ids_keep: torch.Tensor | None = None):
        """Encoder on the visible patches (all patches when ids_keep is None)."""
        return self.forward_tokens(self.embed_patches(patches, ids_keep))

    def patch_pos_embed(self, rows: int, cols: int) -> torch.Tensor:
        """Patch position embeddings for a rows x cols grid, (1, rows*cols, D).

        The native grid returns the stored embedding itself; other grids are resampled bicubically
        (as DINOv2 and timm do; without antialiasing, as in DINOv2's ViTs), so local crops and
        evaluation at another resolution share the positions learned at the native size.
        """
        g, n = self.spec.grid, self.spec.pos_prefix_tokens
        if (rows, cols) == (g, g):
            return self.pos_embed[:, n:, :]
        pos = resample_abs_pos_embed(self.pos_embed.float(), new_size=[rows, cols], old_size=[g, g],
                                     num_prefix_tokens=n, interpolation="bicubic", antialias=False)
        return pos[:, n:, :].to(self.pos_embed.dtype)

    def embed_image(self, x: torch.Tensor, masks: torch.Tensor | None = None,
                    mask_token: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) images of any size divisible by the patch -> (B, L, D) tokens with positions.

        Where `masks` (B, L) is True the patch embedding is replaced by `mask_token` (1, 1, D)
        before the positions are added (DINOv2/iBOT). The mask token belongs to the objective,
        not to the encoder, so the encoder's state dict stays a plain timm ViT.
        """
        p = self.spec.patch_size
        if x.shape[-2] % p or x.shape[-1] % p:
            raise ValueError(f"image size {x.shape[-2]}x{x.shape[-1]} is not divisible by patch size {p}")
        tokens = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        if masks is not None:
            tokens = torch.where(masks.unsqueeze(-1), mask_token.to(tokens.dtype), tokens)
        return tokens + self.patch_pos_embed(x.shape[-2] // p, x.shape[-1] // p)

    def forward_image(self, x: torch.Tensor, masks: torch.Tensor | None = None,
                      mask_token: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder at any input size (positions interpolated): (B, C, H, W) -> (B, prefix + L, D)."""
        return self.forward_tokens(self.embed_image(x, masks, mask_token))


def build_encoder(spec: EncoderSpec) -> ViTEncoder:
    return ViTEncoder(spec)


def pooled_features(tokens: torch.Tensor, num_prefix: int = 1) -> dict[str, torch.Tensor]:
    """The two feature kinds every evaluation reports: CLS and mean of the patch tokens (CLS and any
    register tokens, the `num_prefix` first tokens, excluded)."""
    return {"cls": tokens[:, 0], "mean": tokens[:, num_prefix:].mean(dim=1)}


def encoder_tokens(encoder, x: torch.Tensor) -> torch.Tensor:
    """All output tokens (B, prefix + L, D) of our encoder or of any timm ViT, at any input size that
    is a multiple of the patch: ours resamples its positions, a public encoder is built with timm's
    dynamic_img_size (which resamples its learned positions)."""
    if isinstance(encoder, ViTEncoder) and x.shape[-1] != encoder.spec.img_size:
        return encoder.forward_image(x)
    return encoder.forward_features(x)


def num_prefix_tokens(encoder) -> int:
    return int(getattr(encoder, "num_prefix_tokens", 1))


def spec_from_config(cfg) -> EncoderSpec:
    """The encoder of a resolved PretrainConfig (its model, sizes, drop path, LayerScale, positions)."""
    return encoder_spec(
        cfg.model, cfg.img_size, cfg.patch_size, cfg.in_chans,
        embed_dim=cfg.width, depth=cfg.depth, num_heads=cfg.heads, drop_path_rate=cfg.drop_path,
        layer_scale=cfg.layer_scale or 0.0, pos_embed=cfg.pos_embed, reg_tokens=cfg.reg_tokens or 0,
        no_embed_class=bool(cfg.no_embed_class),
    )
