"""MAE: reconstruct the pixels of hidden patches from the visible ones (He et al., 2022)."""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn as nn

from unmasked.data.augment import AugmentSpec
from unmasked.models import MAEDecoder, ViTEncoder
from unmasked.models.patches import patchify
from unmasked.objectives.base import Objective
from unmasked.objectives.losses import masked_mse, reconstruction_target
from unmasked.objectives.masking import random_mask
from unmasked.rng import BatchRandom


class MAEStudent(nn.Module):
    def __init__(self, encoder: ViTEncoder, decoder: MAEDecoder):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, patches, ids_keep, ids_restore):
        return self.decoder(self.encoder.forward_visible(patches, ids_keep), ids_restore)


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
