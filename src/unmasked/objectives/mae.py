"""MAE: reconstruct the pixels of hidden patches from the visible ones (He et al., 2022)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn as nn

from unmasked.data.augment import AugmentSpec
from unmasked.errors import UserError
from unmasked.models import MAEDecoder, ViTEncoder, build_encoder
from unmasked.models.patches import patchify
from unmasked.models.vit import spec_from_config
from unmasked.objectives.base import Objective
from unmasked.objectives.losses import masked_mse, reconstruction_target
from unmasked.objectives.masking import random_mask
from unmasked.objectives.registry import ObjectiveEntry, ObjectiveOptions
from unmasked.options import FLAG, open_unit, opt, positive_int
from unmasked.rng import BatchRandom


class MAEStudent(nn.Module):
    def __init__(self, encoder: ViTEncoder, decoder: MAEDecoder):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, patches, ids_keep, ids_restore):
        return self.decoder(self.encoder.forward_visible(patches, ids_keep), ids_restore,
                            self.encoder.num_prefix_tokens)


class MAE(Objective):
    name = "mae"

    def __init__(self, encoder: ViTEncoder, decoder: MAEDecoder, mask_ratio: float = 0.75, norm_pix_loss: bool = True):
        super().__init__()
        self.student = MAEStudent(encoder, decoder)
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss

    def view_specs(self, base: AugmentSpec) -> list[AugmentSpec]:
        return [replace(base, color=False)]

    def forward(self, views, rng: BatchRandom):
        (x,) = views
        p = self.encoder.spec.patch_size
        patches = patchify(x, p)
        mask = random_mask(rng.uniform(patches.shape[1]), self.mask_ratio)
        pred = self.student_call(patches, mask.ids_keep, mask.ids_restore)
        loss = masked_mse(pred, reconstruction_target(patches, self.norm_pix_loss), mask.mask)
        return loss, {"loss_mae": loss.detach()}

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, rng: BatchRandom):
        """(pred, mask, patches) for visualisation; pred is in target units."""
        patches = patchify(x, self.encoder.spec.patch_size)
        mask = random_mask(rng.uniform(patches.shape[1]), self.mask_ratio)
        pred = self.student(patches, mask.ids_keep, mask.ids_restore)
        return pred, mask, patches


# -- options and registration ---------------------------------------------------------------------
@dataclass
class MAEOptions(ObjectiveOptions):
    """Masked reconstruction options, shared by every objective built on MAE (LUT inherits them)."""

    mask_ratio: float = opt(0.75, "fraction of patches hidden from the encoder, in (0, 1); LUT needs >= 0.5",
                            "mae", rule=open_unit())
    norm_pix_loss: bool = opt(True, "regress per-patch normalised pixels (MAE's norm_pix_loss)", "mae", rule=FLAG)
    decoder_width: int | None = opt(None, "MAE decoder width (default 128 on Fashion-MNIST, 512 otherwise)", "mae",
                                    rule=positive_int())
    decoder_depth: int | None = opt(None, "MAE decoder blocks (default 4 on Fashion-MNIST, 8 otherwise)", "mae",
                                    rule=positive_int())
    decoder_heads: int | None = opt(None, "MAE decoder heads (default 4 on Fashion-MNIST, 16 otherwise)", "mae",
                                    rule=positive_int())

    def resolve(self, cfg, small: bool) -> None:
        self.resolve_decoder(small)
        if cfg.crop is None and not small:
            cfg.crop = "rrc"  # MAE's RandomResizedCrop on image folders

    def resolve_decoder(self, small: bool) -> None:
        """The MAE decoder's size: 4 x 128 on small data, the published 8 x 512 otherwise."""
        if self.decoder_width is None:
            self.decoder_width = 128 if small else 512
        if self.decoder_depth is None:
            self.decoder_depth = 4 if small else 8
        if self.decoder_heads is None:
            self.decoder_heads = 4 if small else 16

    def validate(self, cfg) -> None:
        grid = cfg.img_size // cfg.patch_size
        if grid * grid * (1 - self.mask_ratio) < 1:
            raise UserError(f"--mask-ratio {self.mask_ratio}: leaves no visible patch out of {grid * grid}")
        if self.decoder_width % self.decoder_heads or self.decoder_width % 4:
            raise UserError(f"--decoder-width {self.decoder_width} must be divisible by --decoder-heads "
                            f"{self.decoder_heads} and by 4")

    def reconstruction(self) -> tuple[float, bool]:
        """(mask ratio, norm_pix_loss): what the reconstruction figures show and de-normalise."""
        return self.mask_ratio, self.norm_pix_loss


def build_decoder(o: MAEOptions, spec) -> MAEDecoder:
    return MAEDecoder(grid=spec.grid, embed_dim=spec.embed_dim, decoder_dim=o.decoder_width,
                      depth=o.decoder_depth, num_heads=o.decoder_heads, patch_dim=spec.patch_dim)


def build(cfg) -> MAE:
    o, spec = cfg.objective_options, spec_from_config(cfg)
    return MAE(build_encoder(spec), build_decoder(o, spec), o.mask_ratio, o.norm_pix_loss)


ENTRY = ObjectiveEntry(name="mae", objective=MAE, options=MAEOptions, build=build)
