"""DINOv2-style self-distillation: DINO (CLS) + iBOT (masked patches) + KoLeo, multi-crop.

Student: the ViT, a learned mask token and a DINO head (shared with iBOT unless
--ibot-separate-head). Teacher: an EMA copy of backbone and heads, always in eval mode, that
sees only the two unmasked global crops. The student sees both global crops, block-masked, and
N local crops at their own size (positions interpolated). The exported encoder is the
teacher's backbone, as DINOv2 releases it. See docs/objectives.md.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import torch
import torch.nn as nn

from unmasked.data.augment import AugmentSpec
from unmasked.models.dino_head import DINOHead
from unmasked.models.vit import EncoderSpec, ViTEncoder, build_encoder, spec_from_config
from unmasked.objectives.base import Objective
from unmasked.objectives.dino.block_mask import batch_block_masks
from unmasked.objectives.dino.losses import dino_loss, ibot_loss, koleo_loss
from unmasked.objectives.dino.options import KOLEO_OFF, SHARED_DEFAULTS, DINOv2Options
from unmasked.objectives.dino.targets import Centering, sinkhorn_knopp
from unmasked.objectives.dino.temperature import WarmupConstant
from unmasked.objectives.registry import ObjectiveEntry
from unmasked.rng import BatchRandom
from unmasked.train.ema import update_momentum

__all__ = ["DINOv2", "DINOv2Options", "build"]


def _run_heads(net, cls: torch.Tensor, patches: torch.Tensor):
    """(CLS logits, patch logits); a shared head runs once on both, as DINOv2 does."""
    if net.ibot_head is None:
        out = net.dino_head(torch.cat([cls, patches]))
        return out[: cls.shape[0]], out[cls.shape[0] :]
    return net.dino_head(cls), net.ibot_head(patches)


class DINOv2Student(nn.Module):
    def __init__(self, encoder: ViTEncoder, o: DINOv2Options):
        super().__init__()
        d = encoder.spec.embed_dim
        self.encoder = encoder
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))  # zero-init, as DINOv2
        self.dino_head = DINOHead(d, o.dino_heads_k, o.dino_head_hidden, o.dino_head_bottleneck)
        self.ibot_head = (DINOHead(d, o.ibot_heads_k, o.dino_head_hidden, o.dino_head_bottleneck)
                          if o.ibot_separate_head else None)

    def forward(self, global_crops, masks, local_crops=None):
        """-> (pre-head global CLS, global CLS logits, local CLS logits or None, masked-patch logits)."""
        g = self.encoder.forward_image(global_crops, masks, self.mask_token)
        cls = g[:, 0]
        n_global = cls.shape[0]
        if local_crops is not None:
            cls = torch.cat([cls, self.encoder.forward_image(local_crops)[:, 0]])
        # iBOT's patch tokens: CLS and any register tokens left out
        cls_logits, patch_logits = _run_heads(self, cls, g[:, self.encoder.num_prefix_tokens:][masks])
        local_logits = cls_logits[n_global:] if local_crops is not None else None
        return g[:, 0], cls_logits[:n_global], local_logits, patch_logits


class DINOv2Teacher(nn.Module):
    """EMA copy of the student's backbone and heads (not the mask token: it never masks)."""

    def __init__(self, student: DINOv2Student):
        super().__init__()
        self.encoder = copy.deepcopy(student.encoder)
        self.dino_head = copy.deepcopy(student.dino_head)
        self.ibot_head = copy.deepcopy(student.ibot_head)
        self.requires_grad_(False)

    @torch.no_grad()
    def forward(self, global_crops, masks):
        """Unmasked global crops -> (CLS logits, logits of the patches the student had masked)."""
        g = self.encoder.forward_image(global_crops)
        return _run_heads(self, g[:, 0], g[:, self.encoder.num_prefix_tokens:][masks])


def entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.clamp(min=1e-12).log()).sum(dim=-1)


class DINOv2(Objective):
    name = "dinov2"
    views = 2 + 8  # 2 global crops and, by default, 8 local crops
    uses_teacher = True
    shared_crop = False  # its own multi-crop (--dino-global-scale-min, ...)
    export_network = "teacher"  # what encoder.json should say

    @property
    def min_micro_batch(self) -> int:
        """KoLeo finds each image's nearest neighbour among the others of its micro-batch."""
        return 2 if self.options.koleo_weight > 0 else 1

    micro_batch_floor_per_process = True  # KoLeo's neighbours are this process's images only

    @property
    def micro_batch_floor_lift(self) -> str | None:
        return KOLEO_OFF if self.options.koleo_weight > 0 else None

    def __init__(self, encoder: ViTEncoder | EncoderSpec, options: DINOv2Options):
        super().__init__()
        if isinstance(encoder, EncoderSpec):
            encoder = build_encoder(encoder)
        missing = [k for k, v in vars(options).items() if v is None]
        if missing:
            raise ValueError(f"DINOv2 options not resolved: {', '.join(missing)} (call resolve_options first)")
        self.options = o = options
        self.student = DINOv2Student(encoder, o)
        self.teacher = DINOv2Teacher(self.student)
        self.dino_center = Centering(o.dino_heads_k, o.dino_center_momentum)
        self.ibot_center = Centering(o.ibot_heads_k, o.dino_center_momentum)
        self.step_values: dict[str, float] = {}

    # -- what the loop asks --------------------------------------------------------------
    def view_specs(self, base: AugmentSpec) -> list[AugmentSpec]:
        """2 global crops (model size) then N local crops (their own size), DINO v1 photometry."""
        o = self.options
        blur = o.dino_blur
        g1 = replace(base, crop="rrc", rrc_scale=(o.dino_global_scale_min, 1.0), color=False, color_dino=True,
                     grayscale_p=0.2, blur_p=1.0 if blur else 0.0, solarize_p=0.0)
        g2 = replace(g1, blur_p=0.1 if blur else 0.0, solarize_p=0.2)
        local = replace(g1, img_size=o.dino_local_size, rrc_scale=(o.dino_local_scale_min, o.dino_local_scale_max),
                        blur_p=0.5 if blur else 0.0)
        return [g1, g2] + [local] * o.dino_local_crops

    def schedules(self, total_steps: int, steps_per_epoch: int) -> dict:
        o = self.options
        warm = round(o.dino_teacher_temp_warmup_epochs * steps_per_epoch)
        return {"teacher_temp": WarmupConstant(o.dino_teacher_temp_start, o.dino_teacher_temp, warm)}

    def set_step_values(self, values: dict[str, float]) -> None:
        """Called at the start of every optimiser step: a step skipped by `--nan skip` never reached
        `update_teacher`, so its pending centre sums are dropped here rather than folded in later."""
        self.step_values = dict(values)
        self.dino_center.pending.zero_()
        self.ibot_center.pending.zero_()

    def teacher_temp(self) -> float:
        """This step's value from the loop; the warm-up's start if the loop gave none (e.g. bench)."""
        return float(self.step_values.get("teacher_temp", self.options.dino_teacher_temp_start))

    def last_layer_params(self) -> list[nn.Parameter]:
        heads = [h for h in (self.student.dino_head, self.student.ibot_head) if h is not None]
        return [p for h in heads for p in h.last_layer.parameters()]

    def freeze_last_layer_steps(self, steps_per_epoch: int) -> int:
        return round(self.options.dino_freeze_last_layer_epochs * steps_per_epoch)

    def clip_gradients(self, max_norm: float) -> torch.Tensor:
        """DINOv2 clips the backbone (with the mask token) and each head on its own; the norm
        returned is the joint one, as with joint clipping."""
        if not self.options.dino_clip_per_module:
            return super().clip_gradients(max_norm)
        s = self.student
        modules = [[*s.encoder.parameters(), s.mask_token], list(s.dino_head.parameters())]
        if s.ibot_head is not None:
            modules.append(list(s.ibot_head.parameters()))
        norms = torch.stack([torch.nn.utils.clip_grad_norm_(m, max_norm) for m in modules])
        return norms.square().sum().sqrt()

    def export_encoder(self) -> ViTEncoder:
        return self.teacher.encoder

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # no drop path, and what DINOv2 evaluates
        return self

    # -- one forward ---------------------------------------------------------------------
    def _targets(self, logits: torch.Tensor, center: Centering, temp: float) -> torch.Tensor:
        if self.options.dino_centering == "sinkhorn":
            return sinkhorn_knopp(logits, temp)
        probs = center.softmax(logits, temp)
        if self.training:
            center.accumulate(logits)
        return probs

    def block_masks(self, rng: BatchRandom, device) -> torch.Tensor:
        o = self.options
        return batch_block_masks(rng, 2, self.encoder.spec.grid, o.ibot_mask_prob, o.ibot_mask_ratio_min,
                                 o.ibot_mask_ratio_max, o.ibot_mask_min_patches).to(device)

    def forward(self, views, rng: BatchRandom):
        o = self.options
        g1, g2, *locals_ = views
        global_crops = torch.cat([g1, g2])
        masks = self.block_masks(rng, global_crops.device)
        local_crops = torch.cat(locals_) if locals_ else None
        cls_pre, s_cls, s_local, s_patch = self.student_call(global_crops, masks, local_crops)
        t_cls, t_patch = self.teacher_call(global_crops, masks)
        temp = self.teacher_temp()
        t_cls_p = self._targets(t_cls, self.dino_center, temp)
        t_patch_p = self._targets(t_patch, self.ibot_center, temp)
        loss_dino = dino_loss(s_cls, s_local, t_cls_p, o.dino_student_temp)
        loss_ibot = ibot_loss(s_patch, t_patch_p, masks, o.dino_student_temp)
        loss_koleo = sum(koleo_loss(c) for c in cls_pre.chunk(2))
        loss = o.dino_weight * loss_dino + o.ibot_weight * loss_ibot + o.koleo_weight * loss_koleo
        metrics = {
            "loss_dino": loss_dino.detach(), "loss_ibot": loss_ibot.detach(), "loss_koleo": loss_koleo.detach(),
            # collapse monitors: per-image entropy near ln K = uniform, entropy of the mean near 0 = constant
            "teacher_entropy": entropy(t_cls_p).mean(), "teacher_mean_entropy": entropy(t_cls_p.mean(dim=0)),
            "teacher_temp": torch.tensor(temp, device=loss.device), "masked_share": masks.float().mean(),
        }
        return loss, metrics

    # -- after the optimiser step ----------------------------------------------------------
    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """EMA of backbone and heads; then this step's centre update (once per optimiser step)."""
        update_momentum(self.ema_pairs(), momentum, self.ema_kernels)
        if self.options.dino_centering == "centering":
            self.dino_center.apply_update()
            self.ibot_center.apply_update()


# -- registration -------------------------------------------------------------------------------
def build(cfg) -> DINOv2:
    """The objective for a resolved PretrainConfig."""
    return DINOv2(build_encoder(spec_from_config(cfg)), cfg.objective_options)


ENTRY = ObjectiveEntry(name="dinov2", objective=DINOv2, options=DINOv2Options, build=build,
                       defaults=SHARED_DEFAULTS)
