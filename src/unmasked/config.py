"""The pretraining configuration: one flat dataclass, its defaults, and how they are resolved.

Every field is a command-line option of `unmasked pretrain` (the help text lives here, next to
the default). The shared options are the dataclass's fields; each registered objective adds its
own options (its `ObjectiveEntry.options` dataclass) as flat attributes and config.json keys.
Fields left as None are resolved from the data: Fashion-MNIST gets a small recipe (ViT-Tiny,
28 px, patch 4), image folders the published ViT recipe (224 px, patch 16); the objective's
`resolve` fills its own (e.g. the MAE decoder). The resolved config is saved next to the run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from unmasked.models.vit import PRESETS


def opt(default, help: str, group: str = "training", choices=None, metavar=None, parse=None, rule=None):
    """A config field and its command-line option; `rule` (an option_rules.Rule) says which values it
    accepts, so an objective's own options carry their validation with them."""
    return field(default=default, metadata={"help": help, "group": group, "choices": choices, "metavar": metavar,
                                            "parse": parse, "rule": rule})


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
    objective: str = opt("lut", "pretraining objective (the registered ones; see unmasked.objectives)", "objective")
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
    drop_path: float = opt(0.0, "stochastic depth rate of the encoder", "model")
    init_from: str | None = opt(None, "warm start: load the encoder weights of this run folder, checkpoint or "
                                "encoder.safetensors (same encoder shape); decoder, heads and optimiser start "
                                "fresh", "model", metavar="RUN")
    # -- objective (its own options: see the objective's group) -----------------------------
    ema_momentum: float = opt(0.996, "objectives with an EMA teacher: its momentum at the start (cosine to 1.0 "
                              "per step)", "objective")
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
    weight_decay_end: float | None = opt(None, "cosine the weight decay from --weight-decay to this value over the "
                                         "run (default: constant)")
    layer_decay: float | None = opt(None, "layer-wise lr decay of the encoder: block l of L gets lr x "
                                    "decay^(L - l) (default: off)")
    patch_embed_lr_mult: float = opt(1.0, "lr multiplier of the patch embedding (DINOv2 uses 0.2)")
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
    precision: str = opt("auto", "'auto' (bf16 autocast on CUDA, fp16 with a gradient scaler on a GPU without "
                         "bf16 such as V100 or T4, fp32 on CPU), 'fp32', 'bf16' or 'fp16'", "run",
                         choices=("auto", "fp32", "bf16", "fp16"))
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
    on_collapse: str = opt("warn", "on a representation collapse (DINOv2 teacher entropy pinned at 0 or ln K, "
                           "nearly identical embeddings, kNN monitor at chance): 'warn' (one line, logged in "
                           "metrics.jsonl) or 'stop' the run, its checkpoint kept", "run", choices=("warn", "stop"))
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
        d = asdict(self)
        d.update({name: getattr(self, name) for name in _objective_defaults()})
        return d

    @classmethod
    def from_dict(cls, d: dict) -> PretrainConfig:
        known = {f.name for f in fields(cls)} | set(_objective_defaults())
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

CORE_FIELDS = list(fields(PretrainConfig))
OPTION_FIELDS = [f for f in CORE_FIELDS if not f.metadata.get("resolved")]  # the shared options
DEFAULTS = {f.name: f.default for f in OPTION_FIELDS if f.default is not MISSING}


def _objective_defaults() -> dict:
    from unmasked.objectives import registry  # registers the built-in objectives on first import

    return registry.option_defaults()


def all_option_fields() -> list:
    """The shared options, then every registered objective's options (the CLI's flags)."""
    from unmasked.objectives import registry

    return OPTION_FIELDS + registry.option_fields()


_dataclass_init = PretrainConfig.__init__


def _init_with_objective_options(self, **kwargs):
    """The dataclass's __init__ for the shared fields; objective options are flat attributes too."""
    defaults = _objective_defaults()
    extra = {k: kwargs.pop(k) for k in list(kwargs) if k in defaults}
    _dataclass_init(self, **kwargs)  # an unknown keyword is still a TypeError
    for name, default in defaults.items():
        setattr(self, name, extra.get(name, default))


PretrainConfig.__init__ = _init_with_objective_options


def resolve_defaults(cfg: PretrainConfig, fashion: bool) -> PretrainConfig:
    """Fill the data-dependent defaults (fields left as None)."""
    small = fashion
    def pick(value, small_default, big_default):
        return value if value is not None else (small_default if small else big_default)

    cfg.model = pick(cfg.model, "vit_tiny", "vit_base")
    cfg.img_size = pick(cfg.img_size, 28, 224)
    cfg.patch_size = pick(cfg.patch_size, 4, 16)
    cfg.epochs = pick(cfg.epochs, 40, 100)
    cfg.batch_size = pick(cfg.batch_size, 256, 256)
    from unmasked.objectives import registry

    entry = registry.get(cfg.objective)
    if entry.resolve is not None:  # the objective's own defaults (it may also choose e.g. the crop)
        entry.resolve(cfg, small)
    if cfg.crop is None:
        cfg.crop = "pad"
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

    from unmasked.objectives import registry
    from unmasked.option_rules import check_values

    entry = registry.get(cfg.objective)
    check_values("pretrain", cfg)  # each option on its own (NaN, infinities, signs, ranges); then combinations
    if cfg.compile and cfg.compile_mode != "default" and cfg.accum_steps > 1:
        # CUDA graphs keep gradients in their memory pool, which the next micro-batch's replay
        # overwrites before the gradients are accumulated
        bad("compile_mode", "CUDA graphs (reduce-overhead, max-autotune) cannot accumulate gradients over "
                            f"--accum-steps {cfg.accum_steps}; use --compile-mode default or --accum-steps 1")
    for name in ("epochs", "batch_size", "accum_steps", "img_size", "patch_size", "save_every", "log_every"):
        v = getattr(cfg, name)
        if v is not None and v < 1:
            bad(name, "must be a positive integer")
    for name in ("steps", "subset", "save_every_steps", "width", "depth", "heads"):
        v = getattr(cfg, name)
        if v is not None and v < 1:
            bad(name, "must be a positive integer when given")
    if cfg.img_size % cfg.patch_size:
        raise UserError(f"--img-size {cfg.img_size} is not divisible by --patch-size {cfg.patch_size}; "
                        "choose sizes where img_size = k * patch_size")
    if cfg.batch_size % cfg.accum_steps:
        raise UserError(f"--batch-size {cfg.batch_size} is not divisible by --accum-steps {cfg.accum_steps}")
    width, _, heads = PRESETS[cfg.model]
    width, heads = cfg.width or width, cfg.heads or heads
    if width % heads or width % 4:
        raise UserError(f"--width {width} must be divisible by --heads {heads} and by 4")
    for name in ("base_lr", "weight_decay", "min_lr", "drop_path", "warmup_epochs", "cache_gb"):
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
    if cfg.weight_decay_end is not None and cfg.weight_decay_end < 0:
        bad("weight_decay_end", "must not be negative")
    if cfg.layer_decay is not None and not 0.0 < cfg.layer_decay <= 1.0:
        bad("layer_decay", "must be in (0, 1]")
    if cfg.patch_embed_lr_mult < 0:
        bad("patch_embed_lr_mult", "must not be negative")
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
    if entry.validate is not None:
        entry.validate(cfg)
