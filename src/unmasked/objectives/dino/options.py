"""DINOv2's options (one `--help` group), their data-dependent defaults and their checks.

Defaults follow docs/objectives.md (DINOv2) (DINOv2's default config, DINO v1 where it says so);
fields left as None are filled by `resolve_options`: image folders get the published recipe,
Fashion-MNIST-sized data its small-image recipe. The shared options DINOv2 sets otherwise than
MAE (its optimiser recipe) are `SHARED_DEFAULTS`, applied only where the user gave no value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from unmasked.errors import UserError
from unmasked.objectives.base import check_micro_batch
from unmasked.objectives.dino.block_mask import default_min_patches
from unmasked.objectives.registry import ObjectiveOptions
from unmasked.options import (
    CHOICE,
    FLAG,
    fraction,
    non_negative,
    open_unit,
    opt,
    positive,
    positive_int,
    unit,
    up_to_one,
)
from unmasked.train.distributed import launched_processes

GROUP = "dinov2"
CENTERINGS = ("centering", "sinkhorn")


# DINOv2's optimiser recipe (its ssl_default_config): AdamW (0.9, 0.999), layer decay 0.9, patch
# embedding lr x 0.2, weight decay cosine 0.04 -> 0.4, gradient clip 3.0 (per module: see
# --dino-clip-per-module), EMA 0.992 -> 1, cosine to 1e-6. The base lr is DINO v1's 5e-4 per 256
# images, scaled linearly on small images and by sqrt on image folders (5e-4 * sqrt(B) / 4 =
# DINOv2's 0.004 * sqrt(B / 1024)): `lr_scaling` None is resolved from the data. Drop path
# (None) and the warm-up (10% of the epochs) are resolved from the model size and the epochs.
# DINOv2's LayerScale (1e-5) and learned positions are options (--layer-scale 1e-5 --pos-embed
# learned), not defaults: on the demo's model at one CPU epoch they cost about 6 points of
# mean-pooled kNN20 and 18 of the mean-pooled linear probe, 3 seeds (studies/dinov2-recipe-cpu.toml).
SHARED_DEFAULTS = {
    "base_lr": 5e-4, "lr_scaling": None, "weight_decay": 0.04, "weight_decay_end": 0.4, "clip_grad": 3.0,
    "adam_beta2": 0.999, "layer_decay": 0.9, "patch_embed_lr_mult": 0.2, "ema_momentum": 0.992,
    "min_lr": 1e-6, "drop_path": None,
}
# DINOv2's default config trains ViT-L with drop path 0.3 (0.4 for L/14 and g/14); DINO v1 trains
# ViT-S and ViT-B with 0.1. We take DINO v1's value below ViT-L.
DROP_PATH_BY_MODEL = {"vit_tiny": 0.1, "vit_small": 0.1, "vit_base": 0.1, "vit_large": 0.3}
WARMUP_FRACTION = 0.1  # DINOv2: 10 warm-up epochs of 100
KOLEO_OFF = "--koleo-weight 0"  # lifts KoLeo's floor of 2 images per micro-batch


@dataclass
class DINOv2Options(ObjectiveOptions):
    # runs saved before per-module clipping existed clipped the joint norm
    LEGACY: ClassVar[dict] = {"dino_clip_per_module": False}

    dino_heads_k: int | None = opt(None, "DINOv2: prototypes K of the DINO head (default 65536 on image folders, "
                                   "4096 on small images, where 65536 barely learns)", GROUP, rule=positive_int())
    dino_head_hidden: int = opt(2048, "DINOv2: hidden width of the head's 3-layer MLP", GROUP, rule=positive_int())
    dino_head_bottleneck: int = opt(256, "DINOv2: bottleneck width before the L2 norm and the prototypes", GROUP,
                                   rule=positive_int())
    ibot_separate_head: bool = opt(False, "DINOv2: give iBOT its own head instead of sharing the DINO head "
                                   "(as the ViT-L/g configs do)", GROUP, rule=FLAG)
    ibot_heads_k: int | None = opt(None, "DINOv2: prototypes of the separate iBOT head (default --dino-heads-k)",
                                   GROUP, rule=positive_int())
    dino_student_temp: float = opt(0.1, "DINOv2: student temperature", GROUP, rule=positive())
    dino_teacher_temp: float = opt(0.07, "DINOv2: teacher temperature after the warm-up (above 0.07 is "
                                   "unstable)", GROUP, rule=positive())
    dino_teacher_temp_start: float = opt(0.04, "DINOv2: teacher temperature at step 0, raised linearly to "
                                         "--dino-teacher-temp", GROUP, rule=positive())
    dino_teacher_temp_warmup_epochs: float | None = opt(None, "DINOv2: epochs of teacher-temperature warm-up "
                                                        "(default 30, or 30%% of a shorter run)", GROUP,
                                                        rule=non_negative("the teacher temperature starts at "
                                                                          "--dino-teacher-temp"))
    dino_centering: str = opt("centering", "DINOv2: teacher targets by 'centering' (EMA centre, momentum "
                              "--dino-center-momentum) or 'sinkhorn' (Sinkhorn-Knopp, 3 iterations; ViT-L/g)",
                              GROUP, choices=CENTERINGS, rule=CHOICE)
    dino_center_momentum: float = opt(0.9, "DINOv2: momentum of the teacher centres (DINO and iBOT), one "
                                      "update per optimiser step", GROUP,
                                      rule=fraction("the centre is the current batch mean"))
    dino_weight: float = opt(1.0, "DINOv2: weight of the DINO (CLS) loss", GROUP, rule=non_negative("no DINO loss"))
    ibot_weight: float = opt(1.0, "DINOv2: weight of the iBOT (masked patch) loss", GROUP,
                             rule=non_negative("no iBOT loss"))
    koleo_weight: float = opt(0.1, "DINOv2: weight of the KoLeo regulariser (0 turns it off)", GROUP,
                              rule=non_negative("no KoLeo regulariser"))
    ibot_mask_prob: float = opt(0.5, "DINOv2: fraction of the student's global-crop images that get a block "
                                "mask", GROUP, rule=unit("no image is masked"))
    ibot_mask_ratio_min: float = opt(0.1, "DINOv2: smallest mask ratio (ratios are stratified over [min, max])",
                                     GROUP, rule=open_unit())
    ibot_mask_ratio_max: float = opt(0.5, "DINOv2: largest mask ratio", GROUP, rule=open_unit())
    ibot_mask_min_patches: int | None = opt(None, "DINOv2: smallest mask block in patches (default BEiT's 4 at "
                                            "14 x 14 tokens, scaled to the grid's token count, at least 1)", GROUP,
                                            rule=positive_int())
    dino_local_crops: int = opt(8, "DINOv2: number of local crops (0 for global crops only)", GROUP,
                                rule=non_negative("global crops only"))
    dino_local_size: int | None = opt(None, "DINOv2: local crop size in pixels, a multiple of --patch-size "
                                      "(default 3/7 of --img-size: 96 at 224, 12 at 28)", GROUP, rule=positive_int())
    dino_global_scale_min: float | None = opt(None, "DINOv2: smallest area fraction of a global crop (default "
                                              "0.32; 0.4 on small images)", GROUP, rule=up_to_one())
    dino_local_scale_min: float | None = opt(None, "DINOv2: smallest area fraction of a local crop (default "
                                             "0.05; 0.1 on small images)", GROUP, rule=up_to_one())
    dino_local_scale_max: float | None = opt(None, "DINOv2: largest area fraction of a local crop (default "
                                             "--dino-global-scale-min)", GROUP, rule=up_to_one())
    dino_blur: bool | None = opt(None, "DINOv2: Gaussian blur with DINO v1's probabilities 1.0 / 0.1 / 0.5 "
                                 "(global 1 / global 2 / local); default on, off on small images", GROUP, rule=FLAG)
    dino_freeze_last_layer_epochs: float = opt(1.0, "DINOv2: epochs during which the heads' prototype layer "
                                               "keeps lr 0", GROUP,
                                               rule=non_negative("the prototype layer trains from the first step"))
    dino_clip_per_module: bool = opt(True, "DINOv2: clip the gradient norm (--clip-grad) of the backbone, the DINO "
                                     "head and the iBOT head separately, as DINOv2 does; --no-dino-clip-per-module "
                                     "clips their joint norm", GROUP, rule=FLAG)

    def resolve(self, cfg, small: bool) -> None:
        """This objective's data-dependent defaults, before the shared ones (the warm-up)."""
        if self.ibot_heads_k is not None and not self.ibot_separate_head:
            raise UserError(f"--ibot-heads-k {self.ibot_heads_k}: only a separate iBOT head has its own prototypes; "
                            "add --ibot-separate-head or drop --ibot-heads-k (the shared head has --dino-heads-k)")
        resolve_options(self, cfg.img_size, cfg.patch_size, cfg.epochs, small)
        if cfg.lr_scaling is None:
            cfg.lr_scaling = "linear" if small else "sqrt"
        if cfg.drop_path is None:
            cfg.drop_path = DROP_PATH_BY_MODEL.get(cfg.model, 0.1)
        if cfg.warmup_epochs is None:
            cfg.warmup_epochs = WARMUP_FRACTION * cfg.epochs

    def validate(self, cfg) -> None:
        check_options(self, cfg.img_size, cfg.patch_size, cfg.batch_size, cfg.accum_steps)


def default_local_size(img_size: int, patch_size: int) -> int:
    """DINOv2's local/global size ratio (96 / 224), rounded to whole patches, at least one patch."""
    return max(1, round(img_size * 96 / 224 / patch_size)) * patch_size


def resolve_options(o: DINOv2Options, img_size: int, patch_size: int, epochs: float, small: bool) -> DINOv2Options:
    """Fill the fields left as None (in place; also returned)."""
    def pick(value, small_default, big_default):
        return value if value is not None else (small_default if small else big_default)

    o.dino_heads_k = pick(o.dino_heads_k, 4096, 65536)
    o.ibot_heads_k = o.ibot_heads_k if o.ibot_heads_k is not None else o.dino_heads_k
    o.dino_local_size = o.dino_local_size or default_local_size(img_size, patch_size)
    o.dino_global_scale_min = pick(o.dino_global_scale_min, 0.4, 0.32)
    o.dino_local_scale_min = pick(o.dino_local_scale_min, 0.1, 0.05)
    o.dino_local_scale_max = o.dino_local_scale_max or o.dino_global_scale_min
    o.dino_blur = pick(o.dino_blur, False, True)  # a blur of sigma >= 0.1 px erases a 12-px crop
    if o.dino_teacher_temp_warmup_epochs is None:
        o.dino_teacher_temp_warmup_epochs = min(30.0, 0.3 * epochs)  # 30 of DINOv2's 100 epochs
    if o.ibot_mask_min_patches is None:
        o.ibot_mask_min_patches = default_min_patches((img_size // patch_size) ** 2)
    return o


def check_options(o: DINOv2Options, img_size: int, patch_size: int, batch: int | None = None,
                  accum: int = 1) -> None:
    """The combinations (each value on its own is checked by its field's rule): a UserError names
    the option, its value and what is allowed."""
    def bad(name, allowed):
        raise UserError(f"--{name.replace('_', '-')} {getattr(o, name)}: {allowed}")

    # a softmax over one prototype is 1 for every image: the cross-entropy, hence the loss, is always 0
    if o.dino_heads_k == 1:
        bad("dino_heads_k", "needs at least 2 prototypes (with 1 the DINO and iBOT losses are always 0); the "
                            "default is 65536, or 4096 on small images")
    if o.ibot_separate_head and o.ibot_heads_k == 1:
        bad("ibot_heads_k", "needs at least 2 prototypes (with 1 the iBOT loss is always 0)")
    if not o.ibot_mask_ratio_min <= o.ibot_mask_ratio_max:
        bad("ibot_mask_ratio_max", f"needs 0 <= --ibot-mask-ratio-min ({o.ibot_mask_ratio_min}) <= max < 1")
    if o.dino_local_scale_min is not None and o.dino_local_scale_max is not None \
            and o.dino_local_scale_min > o.dino_local_scale_max:
        bad("dino_local_scale_min", f"must not exceed --dino-local-scale-max {o.dino_local_scale_max}")
    if o.dino_local_size is not None and (o.dino_local_size % patch_size or o.dino_local_size > img_size):
        bad("dino_local_size", f"must be a multiple of --patch-size {patch_size} and at most --img-size {img_size}")
    if batch is not None and o.koleo_weight > 0:
        # each image's nearest neighbour among the others of its view: one image has none
        check_micro_batch(batch, accum, f"DINOv2's KoLeo term (--koleo-weight {o.koleo_weight:g}, per view)",
                          lift=KOLEO_OFF, processes=launched_processes())
