"""The pretraining configuration: one flat dataclass, its defaults, and how they are resolved.

Every field is a command-line option of `unmasked pretrain` (the help text lives here, next to
the default). Fields left as None are resolved from the data: Fashion-MNIST gets a small recipe
(ViT-Tiny, 28 px, patch 4, 4 x 128 decoder), image folders the published ViT recipe (224 px,
patch 16, 8 x 512 decoder). The resolved config is saved next to the run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from unmasked.models.vit import PRESETS


def opt(default, help: str, group: str = "training", choices=None, metavar=None, parse=None):
    return field(default=default, metadata={"help": help, "group": group, "choices": choices, "metavar": metavar,
                                            "parse": parse})


def int_or_auto(text: str) -> int | str:
    """--accum-steps: a number, or 'auto' (the memory preflight picks it)."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}") from None


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")  # the last two replay CUDA graphs


@dataclass
class PretrainConfig:
    # -- what to train ----------------------------------------------------------------------
    objective: str = opt("lut", "pretraining objective", "objective", choices=("mae", "lut"))
    data: str = opt("fashion-mnist", "'fashion-mnist' (Debian's dataset-fashion-mnist or a folder with its IDX "
                    "files) or an image folder: root/train/<class>/ + root/val/<class>/, root/<class>/, "
                    "or a folder of unlabeled images", "data", metavar="DATA")
    out: str = opt("runs/pretrain", "run folder: config, checkpoints, metrics, exported encoder", "run", metavar="DIR")
    # -- model ------------------------------------------------------------------------------
    model: str | None = opt(None, "encoder size (timm's widths/depths/heads); default vit_tiny on Fashion-MNIST, "
                            "vit_base on image folders", "model", choices=tuple(PRESETS))
    img_size: int | None = opt(None, "input size in pixels (default 28 on Fashion-MNIST, 224 otherwise)", "model")
    patch_size: int | None = opt(None, "patch size in pixels (default 4 on Fashion-MNIST, 16 otherwise)", "model")
    width: int | None = opt(None, "override the preset's embedding width", "model")
    depth: int | None = opt(None, "override the preset's number of blocks", "model")
    heads: int | None = opt(None, "override the preset's attention heads", "model")
    decoder_width: int | None = opt(None, "MAE decoder width (default 128 on Fashion-MNIST, 512 otherwise)", "model")
    decoder_depth: int | None = opt(None, "MAE decoder blocks (default 4 on Fashion-MNIST, 8 otherwise)", "model")
    decoder_heads: int | None = opt(None, "MAE decoder heads (default 4 on Fashion-MNIST, 16 otherwise)", "model")
    drop_path: float = opt(0.0, "stochastic depth rate of the encoder", "model")
    init_from: str | None = opt(None, "warm start: load the encoder weights of this run folder, checkpoint or "
                                "encoder.safetensors (same encoder shape); decoder, heads and optimiser start "
                                "fresh", "model", metavar="RUN")
    # -- objective --------------------------------------------------------------------------
    mask_ratio: float = opt(0.75, "fraction of patches hidden from the encoder, in (0, 1); LUT needs >= 0.5",
                            "objective")
    norm_pix_loss: bool = opt(True, "regress per-patch normalised pixels (MAE's norm_pix_loss)", "objective")
    lut_weight: float = opt(0.25, "LUT: weight w of the global-context loss", "objective")
    ema_momentum: float = opt(0.996, "LUT: EMA teacher momentum at the start (cosine to 1.0 per step)", "objective")
    proj_hidden: int = opt(4096, "LUT: hidden width of projector and predictor", "objective")
    teacher_mode: str = opt("eval", "LUT: 'eval' keeps the EMA teacher in eval mode (projector BatchNorm uses "
                            "EMA-averaged running statistics, no drop path), as the authors' code does; 'train' "
                            "runs it in train mode (batch statistics, as BYOL; drop path when --drop-path > 0)",
                            "objective", choices=("eval", "train"))
    fuse_views: bool | None = opt(None, "LUT: run both student views (and both teacher views) in one encoder "
                                  "call (default: on with CUDA or torchrun, where it halves kernel launches and "
                                  "collectives; off for one CPU process, where it measured about 10%% slower)", "performance")
    # -- augmentation -----------------------------------------------------------------------
    crop: str | None = opt(None, "random crop: 'rrc' RandomResizedCrop (MAE), 'pad' reflect-pad crop (LUT), "
                           "'none'; default 'pad' on Fashion-MNIST, else rrc for MAE / pad for LUT", "data",
                           choices=("rrc", "pad", "none"))
    crop_scale_min: float = opt(0.2, "smallest crop area fraction for 'rrc'", "data")
    pad: int | None = opt(None, "reflect padding in pixels for 'pad' crops (default 4 at every image size, as "
                          "LUT's code: RandomCrop(224, padding=4))", "data")
    # -- optimisation -----------------------------------------------------------------------
    epochs: int | None = opt(None, "training epochs (default 40 on Fashion-MNIST, 100 otherwise)")
    warmup_epochs: float | None = opt(None, "linear warm-up epochs (default 5%% of the epochs, at least 1)")
    batch_size: int | None = opt(None, "images per optimiser step, over all processes and accumulation steps "
                                 "(default 256)")
    accum_steps: int | str = opt(1, "gradient accumulation: micro-batches per optimiser step; 'auto' = the fewest "
                                 "whose step fits in memory (the global batch stays --batch-size)", metavar="N|auto",
                                 parse=int_or_auto)
    base_lr: float = opt(1.5e-4, "base learning rate, scaled by --lr-scaling")
    lr: float | None = opt(None, "absolute peak learning rate (overrides --base-lr and scaling)")
    lr_scaling: str = opt("linear", "peak lr from base lr: linear = base_lr * batch / 256 (MAE), "
                          "sqrt = base_lr * sqrt(batch) / 4 (LUT's code)", choices=("linear", "sqrt"))
    min_lr: float = opt(0.0, "learning rate at the end of the cosine")
    weight_decay: float = opt(0.05, "AdamW weight decay (none on biases and norms; see --decay-tokens)")
    decay_tokens: bool = opt(True, "weight decay on the CLS and mask tokens too, as the published MAE/LUT code "
                             "does (timm's add_weight_decay exempts only 1-D tensors); --no-decay-tokens exempts "
                             "them")
    clip_grad: float | None = opt(None, "clip the gradient norm to this value (off by default)")
    # -- data handling ----------------------------------------------------------------------
    subset: int | None = opt(None, "use only N training images (a reproducible random subset)", "data", metavar="N")
    channels: int | None = opt(None, "1 or 3 input channels (default: what the data has)", "data", choices=(1, 3))
    cache_gb: float = opt(8.0, "decode image folders once into memory when they fit in this many GB", "data")
    num_workers: int | None = opt(None, "data loader worker processes (default: CPU cores, up to 8)", "data")
    strict: bool = opt(False, "refuse unreadable images instead of skipping them", "data")
    max_image_pixels: int = opt(100_000_000, "skip (or with --strict refuse) images with more pixels than this: "
                                "a small compressed file can decode to gigabytes per worker", "data", metavar="N")
    unlabeled: bool = opt(False, "treat the image folder as unlabeled even if it has class folders", "data")
    # -- run --------------------------------------------------------------------------------
    seed: int = opt(0, "random seed (data order, augmentation, masks, initialisation)", "run")
    device: str = opt("auto", "'auto' (cuda if available), 'cpu', 'cuda' or 'cuda:N'", "run")
    precision: str = opt("auto", "'auto' (bf16 autocast on CUDA, fp32 on CPU), 'fp32' or 'bf16'", "run",
                         choices=("auto", "fp32", "bf16"))
    compile: bool = opt(False, "torch.compile the student's and the EMA teacher's forward passes", "performance")
    compile_mode: str = opt("default", "torch.compile mode: 'reduce-overhead' adds CUDA graphs (small, "
                            "launch-bound models), 'max-autotune' searches kernels", "performance",
                            choices=COMPILE_MODES)
    grad_checkpoint: bool = opt(False, "activation checkpointing in the encoder (less memory, more compute)",
                                "performance")
    memory_check: bool = opt(True, "before the first step, estimate its peak memory and refuse, naming the "
                             "options that fit, when the device has not that much free", "performance")
    save_every: int = opt(1, "write a checkpoint every N epochs (and always at the end)", "run", metavar="N")
    save_every_steps: int | None = opt(None, "also write a checkpoint every N optimiser steps", "run", metavar="N")
    log_every: int = opt(20, "log metrics every N optimiser steps", "run", metavar="N")
    steps: int | None = opt(None, "stop after N optimiser steps in total (the schedule still spans --epochs)",
                            "run", metavar="N")
    nan: str = opt("stop", "on a non-finite loss: 'stop' the run, or 'skip' that step", "run",
                   choices=("stop", "skip"))
    knn_every: float | None = opt(None, "kNN monitor every N epochs (fractions allowed, e.g. 0.25): weighted "
                                  "20-NN top-1 of CLS and mean-pooled features, a fixed bank of 5,000 training "
                                  "images and 1,000 fixed held-out queries, eval mode, no augmentation, no "
                                  "gradient; logged to metrics.jsonl. Each check encodes those 6,000 images "
                                  "(measured: 5 s of one core for the CPU demo model, about 3 s on 2 cores: 1%% "
                                  "of its 2-epoch LUT run, 2.5%% of its MAE run, per check) and is left out of the run's time and images/s (off by default)",
                                  "run", metavar="N")
    tensorboard: bool = opt(False, "mirror metrics.jsonl (losses, lr, momentum, kNN monitor, images/s) into "
                            "TensorBoard event files in <out>/tensorboard; needs pip install "
                            "'unmasked[tensorboard]'", "run")

    # -- resolved from the data (not options) ------------------------------------------------
    in_chans: int | None = field(default=None, metadata={"resolved": True})
    data_as_typed: str | None = field(default=None, metadata={"resolved": True})  # data is stored absolute
    base_size: int | None = field(default=None, metadata={"resolved": True})
    mean: list[float] | None = field(default=None, metadata={"resolved": True})
    std: list[float] | None = field(default=None, metadata={"resolved": True})

    # ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PretrainConfig:
        known = {f.name for f in fields(cls)}
        # a run saved before an option existed resumes with the behaviour it was trained with
        legacy = {k: v for k, v in LEGACY_DEFAULTS.items() if k not in d}
        return cls(**legacy, **{k: v for k, v in d.items() if k in known})

    def save(self, path: str | Path) -> None:
        from unmasked.train.checkpoint import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")

    # -- derived values ---------------------------------------------------------------------
    @property
    def crop_pct(self) -> float:
        """Training images of a folder are decoded at img_size / crop_pct: 0.875 when training uses
        RandomResizedCrop. (Evaluation does not depend on it: see eval/view.py.)"""
        return 0.875 if self.crop == "rrc" else 1.0

    def peak_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        if self.lr_scaling == "sqrt":
            return self.base_lr * math.sqrt(self.batch_size) / 4
        return self.base_lr * self.batch_size / 256


# What runs saved before these options existed did: tokens exempt from weight decay, a train-mode
# teacher. Their optimiser state has the old parameter groups, so a resume must keep them.
LEGACY_DEFAULTS = {"decay_tokens": False, "teacher_mode": "train"}

OPTION_FIELDS = [f for f in fields(PretrainConfig) if not f.metadata.get("resolved")]
DEFAULTS = {f.name: f.default for f in OPTION_FIELDS if f.default is not MISSING}


def resolve_defaults(cfg: PretrainConfig, fashion: bool) -> PretrainConfig:
    """Fill the data-dependent defaults (fields left as None)."""
    small = fashion
    def pick(value, small_default, big_default):
        return value if value is not None else (small_default if small else big_default)

    cfg.model = pick(cfg.model, "vit_tiny", "vit_base")
    cfg.img_size = pick(cfg.img_size, 28, 224)
    cfg.patch_size = pick(cfg.patch_size, 4, 16)
    cfg.decoder_width = pick(cfg.decoder_width, 128, 512)
    cfg.decoder_depth = pick(cfg.decoder_depth, 4, 8)
    cfg.decoder_heads = pick(cfg.decoder_heads, 4, 16)
    cfg.epochs = pick(cfg.epochs, 40, 100)
    cfg.batch_size = pick(cfg.batch_size, 256, 256)
    if cfg.crop is None:
        cfg.crop = "pad" if small else ("rrc" if cfg.objective == "mae" else "pad")
    if cfg.pad is None:
        cfg.pad = 4
    if cfg.warmup_epochs is None:
        cfg.warmup_epochs = float(max(1, round(0.05 * cfg.epochs))) if cfg.epochs >= 2 else 0.0
    if cfg.num_workers is None:
        cfg.num_workers = min(8, os.cpu_count() or 1)
    return cfg


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def validate(cfg: PretrainConfig) -> None:
    """Reject impossible settings with a message naming the option, its value and what is allowed."""
    from unmasked.errors import UserError

    def bad(name, allowed):
        raise UserError(f"{_flag(name)} {getattr(cfg, name)}: {allowed}")

    from unmasked.option_rules import check_values

    check_values("pretrain", cfg)  # each option on its own (NaN, infinities, signs, ranges); then combinations
    if not 0.0 < cfg.mask_ratio < 1.0:
        bad("mask_ratio", "must be in the open interval (0, 1)")
    if cfg.objective == "lut" and cfg.mask_ratio < 0.5:
        bad("mask_ratio", "LUT needs a mask ratio in [0.5, 1) so that its two views' visible tokens are disjoint")
    if cfg.compile and cfg.compile_mode != "default" and cfg.accum_steps > 1:
        # CUDA graphs keep gradients in their memory pool, which the next micro-batch's replay
        # overwrites before the gradients are accumulated
        bad("compile_mode", "CUDA graphs (reduce-overhead, max-autotune) cannot accumulate gradients over "
                            f"--accum-steps {cfg.accum_steps}; use --compile-mode default or --accum-steps 1")
    for name in ("epochs", "batch_size", "accum_steps", "img_size", "patch_size", "save_every", "log_every",
                 "proj_hidden"):
        v = getattr(cfg, name)
        if v is not None and v < 1:
            bad(name, "must be a positive integer")
    for name in ("steps", "subset", "save_every_steps", "width", "depth", "heads", "decoder_width",
                 "decoder_depth", "decoder_heads"):
        v = getattr(cfg, name)
        if v is not None and v < 1:
            bad(name, "must be a positive integer when given")
    if cfg.img_size % cfg.patch_size:
        raise UserError(f"--img-size {cfg.img_size} is not divisible by --patch-size {cfg.patch_size}; "
                        "choose sizes where img_size = k * patch_size")
    grid = cfg.img_size // cfg.patch_size
    if grid * grid * (1 - cfg.mask_ratio) < 1:
        bad("mask_ratio", f"leaves no visible patch out of {grid * grid}")
    if cfg.batch_size % cfg.accum_steps:
        raise UserError(f"--batch-size {cfg.batch_size} is not divisible by --accum-steps {cfg.accum_steps}")
    width, _, heads = PRESETS[cfg.model]
    width, heads = cfg.width or width, cfg.heads or heads
    if width % heads or width % 4:
        raise UserError(f"--width {width} must be divisible by --heads {heads} and by 4")
    if cfg.decoder_width % cfg.decoder_heads or cfg.decoder_width % 4:
        raise UserError(f"--decoder-width {cfg.decoder_width} must be divisible by --decoder-heads "
                        f"{cfg.decoder_heads} and by 4")
    for name in ("base_lr", "weight_decay", "min_lr", "drop_path", "lut_weight", "warmup_epochs", "cache_gb"):
        if getattr(cfg, name) < 0:
            bad(name, "must not be negative")
    if cfg.lr is not None and cfg.lr <= 0:
        bad("lr", "must be positive")
    if cfg.clip_grad is not None and cfg.clip_grad <= 0:
        bad("clip_grad", "must be positive")
    if cfg.min_lr > cfg.peak_lr():
        bad("min_lr", f"must not exceed the peak learning rate {cfg.peak_lr():g} (from --lr, or --base-lr and "
                      "--batch-size)")
    if not 0.0 <= cfg.ema_momentum <= 1.0:
        bad("ema_momentum", "must be in [0, 1]")
    if not 0.0 < cfg.crop_scale_min <= 1.0:
        bad("crop_scale_min", "must be in (0, 1]")
    if cfg.crop == "pad" and not 0 <= cfg.pad < cfg.img_size:
        bad("pad", f"must be in [0, {cfg.img_size})")
    if cfg.warmup_epochs > cfg.epochs:
        bad("warmup_epochs", f"must not exceed --epochs {cfg.epochs}")
    if cfg.num_workers < 0:
        bad("num_workers", "must not be negative")
    if not (cfg.device in ("auto", "cpu", "cuda") or cfg.device.startswith("cuda:")):
        bad("device", "use auto, cpu, cuda or cuda:N")
