"""LUT: MAE plus a global-context loss on the unmasked tokens (Kim et al., ECCV 2024).

Two views with disjoint visible sets; the decoder reconstructs view 1; the mean-pooled visible
tokens of each view, through projector + predictor, are pulled (2 - 2 cos) towards the EMA
teacher's projection of the *other* full view.

The teacher stays in eval mode by default, as the authors' `deepcopy(model).eval()`: its
projector BatchNorm normalises with running statistics, which the EMA update averages like the
weights, and it drops no paths. teacher_mode="train" gives the batch-statistics teacher (BYOL).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import ClassVar

import torch
import torch.nn as nn

from unmasked.data.augment import AugmentSpec
from unmasked.errors import UserError
from unmasked.models import MAEDecoder, MLPHead, ViTEncoder, build_encoder
from unmasked.models.patches import patchify
from unmasked.models.vit import spec_from_config
from unmasked.objectives.base import Objective, check_micro_batch
from unmasked.objectives.losses import cross_view_loss, masked_mse, reconstruction_target
from unmasked.objectives.mae import MAEOptions, build_decoder
from unmasked.objectives.masking import check_lut_mask_ratio, lut_masks
from unmasked.objectives.registry import ObjectiveEntry
from unmasked.options import CHOICE, FLAG, non_negative, opt, positive_int
from unmasked.rng import BatchRandom
from unmasked.train.ema import update_momentum

TEACHER_MODES = ("eval", "train")


def mean_patch_tokens(tokens: torch.Tensor, num_prefix: int = 1) -> torch.Tensor:
    """Mean of the patch tokens: CLS and any register tokens (the first `num_prefix`) left out."""
    return tokens[:, num_prefix:].mean(dim=1)


class LUTStudent(nn.Module):
    def __init__(self, encoder: ViTEncoder, decoder: MAEDecoder, hidden_dim: int = 4096):
        super().__init__()
        d = encoder.spec.embed_dim
        self.encoder = encoder
        self.decoder = decoder
        self.projector = MLPHead(d, hidden_dim, d)
        self.predictor = MLPHead(d, hidden_dim, d)

    def forward(self, p1, p2, ids1, ids2, ids_restore1, fuse_views: bool = True):
        b = p1.shape[0]
        if fuse_views:  # same token count: one encoder call for both views
            lat = self.encoder.forward_visible(torch.cat([p1, p2]), torch.cat([ids1, ids2]))
            lat1, lat2 = lat[:b], lat[b:]
        else:
            lat1 = self.encoder.forward_visible(p1, ids1)
            lat2 = self.encoder.forward_visible(p2, ids2)
        pre = self.encoder.num_prefix_tokens
        pred = self.decoder(lat1, ids_restore1, pre)
        # BatchNorm statistics are per view, as when each view is a separate call.
        s1 = self.predictor(self.projector(mean_patch_tokens(lat1, pre)))
        s2 = self.predictor(self.projector(mean_patch_tokens(lat2, pre)))
        return pred, s1, s2


class LUTTeacher(nn.Module):
    """EMA copy of the student's encoder and projector; the decoder is never copied."""

    def __init__(self, student: LUTStudent):
        super().__init__()
        self.encoder = copy.deepcopy(student.encoder)
        self.projector = copy.deepcopy(student.projector)
        self.requires_grad_(False)

    @torch.no_grad()
    def forward(self, p1, p2, fuse_views: bool = True):
        b = p1.shape[0]
        if fuse_views:
            tok = self.encoder.forward_visible(torch.cat([p1, p2]))
            tok1, tok2 = tok[:b], tok[b:]
        else:
            tok1, tok2 = self.encoder.forward_visible(p1), self.encoder.forward_visible(p2)
        pre = self.encoder.num_prefix_tokens
        return self.projector(mean_patch_tokens(tok1, pre)), self.projector(mean_patch_tokens(tok2, pre))


class LUT(Objective):
    name = "lut"
    views = 2
    uses_teacher = True
    min_micro_batch = 2  # the projector's BatchNorm needs two images for batch statistics

    def __init__(
        self,
        encoder: ViTEncoder,
        decoder: MAEDecoder,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = True,
        weight: float = 0.25,
        hidden_dim: int = 4096,
        fuse_views: bool = True,
        teacher_mode: str = "eval",
    ):
        super().__init__()
        check_lut_mask_ratio(mask_ratio)
        if teacher_mode not in TEACHER_MODES:
            raise ValueError(f"teacher_mode {teacher_mode!r}: expected one of {TEACHER_MODES}")
        self.teacher_mode = teacher_mode
        self.student = LUTStudent(encoder, decoder, hidden_dim)
        self.teacher = LUTTeacher(self.student)
        if teacher_mode == "eval":
            self.teacher.eval()
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        self.weight = weight
        self.fuse_views = fuse_views

    def view_specs(self, base: AugmentSpec) -> list[AugmentSpec]:
        return [replace(base, color=False), replace(base, color=True)]

    def forward(self, views, rng: BatchRandom):
        x1, x2 = views
        p = self.encoder.spec.patch_size
        p1, p2 = patchify(x1, p), patchify(x2, p)
        mask1, ids2 = lut_masks(rng.uniform(p1.shape[1]), self.mask_ratio)
        pred, s1, s2 = self.student_call(p1, p2, mask1.ids_keep, ids2, mask1.ids_restore, self.fuse_views)
        t1, t2 = self.teacher_call(p1, p2, self.fuse_views)
        loss_mae = masked_mse(pred, reconstruction_target(p1, self.norm_pix_loss), mask1.mask)
        loss_lut = cross_view_loss(s1, s2, t1, t2)
        loss = loss_mae + self.weight * loss_lut
        return loss, {"loss_mae": loss_mae.detach(), "loss_lut": loss_lut.detach()}

    def train(self, mode: bool = True):
        """The student follows `mode`; an eval-mode teacher never leaves eval mode."""
        super().train(mode)
        if self.teacher_mode == "eval":
            self.teacher.eval()
        return self

    def average_teacher_buffers(self) -> bool:
        """An eval-mode teacher uses its BatchNorm running statistics: averaged, as the authors' EMA
        averages every state entry; a train-mode teacher never uses them: copied."""
        return self.teacher_mode == "eval"

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """teacher = m * teacher + (1 - m) * student (train/ema.py; integer buffers copied)."""
        update_momentum(self.ema_pairs(), momentum, self.ema_kernels)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, rng: BatchRandom):
        patches = patchify(x, self.encoder.spec.patch_size)
        mask, _ = lut_masks(rng.uniform(patches.shape[1]), self.mask_ratio)
        latent = self.encoder.forward_visible(patches, mask.ids_keep)
        return self.student.decoder(latent, mask.ids_restore, self.encoder.num_prefix_tokens), mask, patches


# -- options and registration ---------------------------------------------------------------------
@dataclass
class LUTOptions(MAEOptions):
    # runs saved before --teacher-mode existed trained a train-mode teacher
    LEGACY: ClassVar[dict] = {"teacher_mode": "train"}

    lut_weight: float = opt(0.25, "weight w of the global-context loss", "lut",
                            rule=non_negative("the patch loss only, no global-context loss"))
    proj_hidden: int = opt(4096, "hidden width of projector and predictor", "lut", rule=positive_int())
    teacher_mode: str = opt("eval", "'eval' keeps the EMA teacher in eval mode (projector BatchNorm uses "
                            "EMA-averaged running statistics, no drop path), as the authors' code does; 'train' "
                            "runs it in train mode (batch statistics, as BYOL; drop path when --drop-path > 0)",
                            "lut", choices=("eval", "train"), rule=CHOICE)
    fuse_views: bool | None = opt(None, "run both student views (and both teacher views) in one encoder "
                                  "call (default: on with CUDA or torchrun, where it halves kernel launches and "
                                  "collectives; off for one CPU process, where it measured about 10%% slower)", "lut",
                                  rule=FLAG)

    def resolve(self, cfg, small: bool) -> None:
        self.resolve_decoder(small)  # LUT keeps the reflect-pad crop of its code on every dataset

    def resolve_device(self, cuda_or_distributed: bool) -> None:
        if self.fuse_views is None:  # fewer, larger kernels pay on a GPU; ~10% cost on one CPU
            self.fuse_views = cuda_or_distributed

    def validate(self, cfg) -> None:
        super().validate(cfg)
        if self.mask_ratio < 0.5:
            raise UserError(f"--mask-ratio {self.mask_ratio}: LUT needs a mask ratio in [0.5, 1) so that its two "
                            "views' visible tokens are disjoint")
        # the projector's BatchNorm fails on one image ("Expected more than 1 value per channel")
        check_micro_batch(cfg.batch_size, cfg.accum_steps, "LUT's projector BatchNorm")


def build(cfg) -> LUT:
    o, spec = cfg.objective_options, spec_from_config(cfg)
    return LUT(build_encoder(spec), build_decoder(o, spec), o.mask_ratio, o.norm_pix_loss, o.lut_weight,
               o.proj_hidden, fuse_views=True if o.fuse_views is None else o.fuse_views,
               teacher_mode=o.teacher_mode)


# LUT's code scales the lr with sqrt(batch) / 4: at batch 256 its 1.5e-4 is a 6e-4 peak, 4x MAE's
# linear rule (measured on the demo model, 3 seeds: kNN20 higher than under the linear rule; see
# studies/dinov2-recipe-cpu.toml)
SHARED_DEFAULTS = {"lr_scaling": "sqrt"}

ENTRY = ObjectiveEntry(name="lut", objective=LUT, options=LUTOptions, build=build, defaults=SHARED_DEFAULTS)
