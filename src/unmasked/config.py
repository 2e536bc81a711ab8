"""The pretraining configuration: the shared options, the objective's options, their defaults.

Every shared field is a command-line option of `unmasked pretrain` (the help text and the rule of
the values it accepts live here, next to the default). The objective's options are its options
dataclass, held as `cfg.objective_options`; the command line and config.json keep them flat
(`--lut-weight`, "lut_weight"). An objective changes shared defaults as data (its registry
entry's `defaults`), applied only to the options the user did not give. Fields left as None are
resolved from the data: Fashion-MNIST gets a small recipe (ViT-Tiny, 28 px, patch 4), image
folders the published ViT recipe (224 px, patch 16); the objective's options resolve their own
(e.g. the MAE decoder). The resolved config is saved next to the run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from unmasked.errors import UserError
from unmasked.files import atomic_write_text, read_json
from unmasked.models.vit import POS_EMBEDS, PRESETS
from unmasked.objectives import registry  # registers the built-in objectives
from unmasked.options import (
    CHOICE,
    DEVICE,
    FLAG,
    MAX_SEED,
    PATH,
    PIXELS,
    TEXT,
    Rule,
    _number,
    check_rules,
    count,
    field_rules,
    flag,
    fraction,
    int_range,
    non_negative,
    open_unit,
    opt,
    positive,
    positive_int,
    unit,
    up_to_one,
)

ACCUM = Rule("must be a positive integer or 'auto'", lambda v: v == "auto" or (_number(v) and v >= 1))


def int_or_auto(text: str) -> int | str:
    """--accum-steps: a number, or 'auto' (the memory preflight picks it)."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}") from None


def float_or_off(text: str) -> float:
    """--layer-scale: a number, or 'none'/'off' (the same as 0: no LayerScale)."""
    if text.lower() in ("none", "off"):
        return 0.0
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, 'none' or 'off', got {text!r}") from None


def float_or_none(text: str) -> float | None:
    """--layer-decay: a number, or 'none'/'off' (no layer-wise decay, as a study file can write it)."""
    if text.lower() in ("none", "off"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, 'none' or 'off', got {text!r}") from None


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")  # the last two replay CUDA graphs


@dataclass
class PretrainConfig:
    # -- what to train ----------------------------------------------------------------------
    objective: str = opt("lut", "pretraining objective (the registered ones; see unmasked.objectives)", "objective",
                         rule=CHOICE)
    data: str = opt("fashion-mnist", "'fashion-mnist' (Debian's dataset-fashion-mnist or a folder with its IDX "
                    "files) or an image folder: root/train/<class>/ + root/val/<class>/, root/<class>/, "
                    "or a folder of unlabeled images", "data", metavar="DATA", rule=TEXT)
    out: str = opt("runs/pretrain", "run folder: config, checkpoints, metrics, exported encoder", "run",
                   metavar="DIR", rule=PATH)
    # -- model ------------------------------------------------------------------------------
    model: str | None = opt(None, "encoder size (timm's widths/depths/heads); default vit_tiny on Fashion-MNIST, "
                            "vit_base on image folders", "model", choices=tuple(PRESETS), rule=CHOICE)
    img_size: int | None = opt(None, "input size in pixels (default 28 on Fashion-MNIST, 224 otherwise)", "model",
                               rule=positive_int())
    patch_size: int | None = opt(None, "patch size in pixels (default 4 on Fashion-MNIST, 16 otherwise)", "model",
                                 rule=positive_int())
    width: int | None = opt(None, "override the preset's embedding width", "model", rule=positive_int())
    depth: int | None = opt(None, "override the preset's number of blocks", "model", rule=positive_int())
    heads: int | None = opt(None, "override the preset's attention heads", "model", rule=positive_int())
    drop_path: float | None = opt(0.0, "stochastic depth rate of the encoder (DINOv2: 0.1 below ViT-L, 0.3 for "
                                  "ViT-L)", "model", rule=fraction("no stochastic depth"))
    layer_scale: float = opt(0.0, "LayerScale: each block's attention and MLP branch is scaled by a learned "
                             "per-channel gamma starting at this value (DINOv2: 1e-5; timm's init_values); 0 or "
                             "'none': no LayerScale (MAE, LUT)", "model", metavar="GAMMA|none", parse=float_or_off,
                             rule=non_negative("no LayerScale"))
    pos_embed: str = opt("sincos", "encoder position embeddings: 'sincos' fixed 2-D sin-cos (MAE, LUT), "
                         "'learned' trained, initialised trunc-normal std 0.02 (DINOv2); the MAE/LUT decoder "
                         "keeps sin-cos", "model", choices=POS_EMBEDS, rule=CHOICE)
    init_from: str | None = opt(None, "warm start: initialise the encoder from SOURCE before step 0: a run "
                                "folder, checkpoint or encoder.safetensors, timm:NAME (with --weights), "
                                "hf-hub:ORG/NAME, local-dir:PATH or random:PRESET[/PATCH]; the shape options not "
                                "given come from it, and its register tokens and LayerScale; learned positions are "
                                "resampled to the training grid; "
                                "decoder, heads and optimiser start fresh; a resumed run never reloads it",
                                "model", metavar="SOURCE", rule=TEXT)
    weights: str | None = opt(None, "with --init-from timm:NAME: its weights file (an official .pth, a "
                              ".safetensors, a timm file), loaded offline through timm's checkpoint filter; "
                              "never executes code from it", "model", metavar="FILE", rule=PATH)
    # -- objective (its own options: see the objective's group) -----------------------------
    ema_momentum: float = opt(0.996, "objectives with an EMA teacher: its momentum at the start (cosine to 1.0 "
                              "per step)", "objective", rule=unit("the teacher copies the student at every step"))
    # -- augmentation -----------------------------------------------------------------------
    crop: str | None = opt(None, "random crop: 'rrc' RandomResizedCrop (MAE), 'pad' reflect-pad crop (LUT), "
                           "'none'; default 'pad' on Fashion-MNIST, else rrc for MAE / pad for LUT", "data",
                           choices=("rrc", "pad", "none"), rule=CHOICE)
    crop_scale_min: float = opt(0.2, "smallest crop area fraction for 'rrc'", "data", rule=up_to_one())
    pad: int | None = opt(None, "reflect padding in pixels for 'pad' crops (default 4 at every image size, as "
                          "LUT's code: RandomCrop(224, padding=4))", "data", rule=count("no padding"))
    # -- optimisation -----------------------------------------------------------------------
    epochs: int | None = opt(None, "training epochs (default 40 on Fashion-MNIST, 100 otherwise)", rule=positive_int())
    warmup_epochs: float | None = opt(None, "linear warm-up epochs (default 5%% of the epochs, at least 1)",
                                      rule=non_negative("no warm-up"))
    batch_size: int | None = opt(None, "images per optimiser step, over all processes and accumulation steps "
                                 "(default 256)", rule=positive_int())
    accum_steps: int | str = opt(1, "gradient accumulation: micro-batches per optimiser step; 'auto' = the fewest "
                                 "whose step fits in memory (the global batch stays --batch-size)", metavar="N|auto",
                                 parse=int_or_auto, rule=ACCUM)
    base_lr: float = opt(1.5e-4, "base learning rate, scaled by --lr-scaling (at batch 256: a 1.5e-4 peak under "
                         "MAE's linear rule, 6e-4 under LUT's sqrt rule)", rule=positive())
    lr: float | None = opt(None, "absolute peak learning rate (overrides --base-lr and scaling)", rule=positive())
    lr_scaling: str | None = opt("linear", "peak lr from base lr: linear = base_lr * batch / 256 (MAE's code), "
                                 "sqrt = base_lr * sqrt(batch) / 4 (LUT's code: 4x linear at batch 256); DINOv2 "
                                 "picks linear on small images, sqrt on image folders",
                                 choices=("linear", "sqrt"), rule=CHOICE)
    adam_beta2: float = opt(0.95, "AdamW's second-moment decay beta2 (beta1 is 0.9); MAE and LUT use 0.95, "
                            "DINOv2 0.999", rule=open_unit())
    min_lr: float = opt(0.0, "learning rate at the end of the cosine", rule=non_negative("the cosine decays to zero"))
    weight_decay: float = opt(0.05, "AdamW weight decay (none on biases and norms; see --decay-tokens)",
                              rule=non_negative("no weight decay"))
    decay_tokens: bool = opt(True, "weight decay on the CLS and mask tokens too, as the published MAE/LUT code "
                             "does (timm's add_weight_decay exempts only 1-D tensors); --no-decay-tokens exempts "
                             "them", rule=FLAG)
    weight_decay_end: float | None = opt(None, "cosine the weight decay from --weight-decay to this value over the "
                                         "run (default: constant)",
                                         rule=non_negative("the weight decay falls to zero by the end"))
    layer_decay: float | None = opt(None, "layer-wise lr decay of the encoder: block l of L gets lr x "
                                    "decay^(L - l); 'none': off (default: off)", metavar="DECAY|none",
                                    parse=float_or_none, rule=up_to_one())
    patch_embed_lr_mult: float = opt(1.0, "lr multiplier of the patch embedding (DINOv2 uses 0.2)",
                                     rule=non_negative("the patch embedding is not trained"))
    clip_grad: float | None = opt(None, "clip the gradient norm to this value (off by default)", rule=positive())
    # -- data handling ----------------------------------------------------------------------
    subset: int | None = opt(None, "use only N training images (a reproducible random subset)", "data",
                             metavar="N", rule=positive_int())
    channels: int | None = opt(None, "1 or 3 input channels (default: what the data has)", "data",
                               choices=(1, 3), rule=CHOICE)
    cache_gb: float = opt(8.0, "decode image folders once into memory when they fit in this many GB", "data",
                          rule=non_negative("never decode into memory; stream every image from disk"))
    num_workers: int | None = opt(None, "data loader worker processes (default: CPU cores, up to 8)", "data",
                                  rule=count("decode in the main process"))
    strict: bool = opt(False, "refuse unreadable images instead of skipping them", "data", rule=FLAG)
    max_image_pixels: int = opt(100_000_000, "skip (or with --strict refuse) images with more pixels than this: "
                                "a small compressed file can decode to gigabytes per worker", "data",
                                metavar="N", rule=PIXELS)
    unlabeled: bool = opt(False, "treat the image folder as unlabeled even if it has class folders", "data", rule=FLAG)
    # -- run --------------------------------------------------------------------------------
    seed: int = opt(0, "random seed (data order, augmentation, masks, initialisation)", "run",
                    rule=int_range(0, MAX_SEED, "seed 0, like any other seed"))
    device: str = opt("auto", "'auto' (cuda if available), 'cpu', 'cuda' or 'cuda:N'", "run", rule=DEVICE)
    precision: str = opt("auto", "'auto' (bf16 autocast on CUDA, fp16 with a gradient scaler on a GPU without "
                         "bf16 such as V100 or T4; on a CPU bf16 autocast where it has AVX-512 BF16 or AMX and a "
                         "timed bf16 product, cached per machine, confirms it is fast, else fp32; the run "
                         "records what it chose), 'fp32', 'bf16' or 'fp16'", "run",
                         choices=("auto", "fp32", "bf16", "fp16"), rule=CHOICE)
    compile: bool = opt(False, "torch.compile the student's and the EMA teacher's forward passes", "performance",
                        rule=FLAG)
    compile_mode: str = opt("default", "torch.compile mode: 'reduce-overhead' adds CUDA graphs (small, "
                            "launch-bound models), 'max-autotune' searches kernels", "performance",
                            choices=COMPILE_MODES, rule=CHOICE)
    grad_checkpoint: bool = opt(False, "activation checkpointing in the encoder (less memory, more compute)",
                                "performance", rule=FLAG)
    memory_check: bool = opt(True, "before the first step, estimate its peak memory and refuse, naming the "
                             "options that fit, when the device has not that much free", "performance", rule=FLAG)
    save_every: int = opt(1, "write a checkpoint every N epochs (and always at the end)", "run",
                          metavar="N", rule=positive_int())
    save_every_steps: int | None = opt(None, "also write a checkpoint every N optimiser steps", "run",
                                       metavar="N", rule=positive_int())
    log_every: int = opt(20, "log metrics every N optimiser steps", "run", metavar="N", rule=positive_int())
    steps: int | None = opt(None, "stop after N optimiser steps in total (the schedule still spans --epochs)",
                            "run", metavar="N", rule=positive_int())
    nan: str = opt("stop", "on a non-finite loss: 'stop' the run, or 'skip' that step", "run",
                   choices=("stop", "skip"), rule=CHOICE)
    on_collapse: str = opt("warn", "on a representation collapse (DINOv2 teacher entropy pinned at 0 or ln K, "
                           "nearly identical embeddings, kNN monitor at chance): 'warn' (one line, logged in "
                           "metrics.jsonl) or 'stop' the run, its checkpoint kept", "run", choices=("warn", "stop"),
                           rule=CHOICE)
    knn_every: float | None = opt(None, "kNN monitor every N epochs (fractions allowed, e.g. 0.25): weighted "
                                  "20-NN top-1 of CLS and mean-pooled features, a fixed bank of 5,000 training "
                                  "images and 1,000 fixed held-out queries, eval mode, no augmentation, no "
                                  "gradient; logged to metrics.jsonl. Each check encodes those 6,000 images "
                                  "(measured: 5 s of one core for the CPU demo model, about 3 s on 2 cores: 1%% "
                                  "of its 2-epoch LUT run, 2.5%% of its MAE run, per check) "
                                  "and is left out of the run's time and images/s (off by default)",
                                  "run", metavar="N", rule=positive())
    tensorboard: bool = opt(False, "mirror metrics.jsonl (losses, lr, momentum, kNN monitor, images/s) into "
                            "TensorBoard event files in <out>/tensorboard; needs pip install "
                            "'unmasked[tensorboard]'", "run", rule=FLAG)

    # -- resolved from the data (not options) ------------------------------------------------
    in_chans: int | None = field(default=None, metadata={"resolved": True})
    data_as_typed: str | None = field(default=None, metadata={"resolved": True})  # data is stored absolute
    base_size: int | None = field(default=None, metadata={"resolved": True})
    mean: list[float] | None = field(default=None, metadata={"resolved": True})
    std: list[float] | None = field(default=None, metadata={"resolved": True})
    init_record: dict | None = field(default=None, metadata={"resolved": True})  # what --init-from loaded
    # the encoder's register tokens and prefix-position layout: from an --init-from source that has
    # them (timm's reg_tokens / no_embed_class), else none
    reg_tokens: int = field(default=0, metadata={"resolved": True})
    no_embed_class: bool = field(default=False, metadata={"resolved": True})

    # -- the objective's own options (its options dataclass; flat on the command line) --------
    objective_options: Any = field(default=None, metadata={"resolved": True})

    def __post_init__(self):
        if self.objective_options is None and self.objective in registry.names():
            self.objective_options = registry.get(self.objective).options()

    @classmethod
    def flat(cls, **given) -> PretrainConfig:
        """A config from flat options, shared and the objective's (as the command line gives them):
        the objective's `defaults` fill the shared options not given. Options of other objectives
        are ignored (a study recipe shared by several objectives has them); any other name is a
        TypeError."""
        entry = registry.get(given.get("objective", DEFAULTS["objective"]))
        return cls._assemble(entry, {**entry.defaults, **given})

    @classmethod
    def from_dict(cls, d: dict) -> PretrainConfig:
        """A saved config.json (flat keys). Options missing from it, because the run was saved
        before they existed, get the behaviour it was trained with (`LEGACY_DEFAULTS`, the
        objective's `LEGACY`); keys no longer known are dropped."""
        entry = registry.get(d.get("objective", DEFAULTS["objective"]))
        legacy = {**LEGACY_DEFAULTS, **entry.options.LEGACY}
        known = SHARED_NAMES | {f.name for f in registry.option_fields_of(entry)}
        return cls._assemble(entry, {**{k: v for k, v in legacy.items() if k not in d},
                                     **{k: v for k, v in d.items() if k in known}})

    @classmethod
    def _assemble(cls, entry, values: dict) -> PretrainConfig:
        own_names = {f.name for f in registry.option_fields_of(entry)}
        unknown = set(values) - SHARED_NAMES - own_names - {f.name for f in registry.option_fields()}
        if unknown:
            raise TypeError(f"PretrainConfig: unknown option(s) {', '.join(sorted(unknown))}")
        shared = {k: v for k, v in values.items() if k in SHARED_NAMES}
        own = entry.options(**{k: v for k, v in values.items() if k in own_names})
        return cls(**shared, objective_options=own)

    def to_dict(self) -> dict:
        """Flat, as config.json has always been: the shared fields, then the objective's options."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "objective_options"}
        d.update({f.name: getattr(self.objective_options, f.name) for f in fields(self.objective_options)})
        return d

    def option(self, name: str):
        """A shared or objective option by its flat name."""
        if name in SHARED_NAMES:
            return getattr(self, name)
        return getattr(self.objective_options, name)

    def has_option(self, name: str) -> bool:
        return name in SHARED_NAMES or hasattr(self.objective_options, name)

    def set_option(self, name: str, value) -> None:
        setattr(self if name in SHARED_NAMES else self.objective_options, name, value)

    def save(self, path: str | Path) -> None:
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


# What runs saved before these options existed did: tokens exempt from weight decay (their
# optimiser state has the old parameter groups, so a resume must keep them); no LayerScale and
# fixed sin-cos positions (their checkpoints have no gammas, their positions are not trained).
LEGACY_DEFAULTS = {"decay_tokens": False, "layer_scale": 0.0, "pos_embed": "sincos"}

CORE_FIELDS = [f for f in fields(PretrainConfig) if f.name != "objective_options"]
OPTION_FIELDS = [f for f in CORE_FIELDS if not f.metadata.get("resolved")]  # the shared options
SHARED_NAMES = {f.name for f in CORE_FIELDS}
DEFAULTS = {f.name: f.default for f in OPTION_FIELDS if f.default is not MISSING}
SHARED_RULES = field_rules(OPTION_FIELDS)


def all_option_fields() -> list:
    """The shared options, then every registered objective's options (the CLI's flags)."""
    return OPTION_FIELDS + registry.option_fields()


def pretrain_rules() -> dict[str, Rule]:
    """The rule of every pretrain option, read from the fields (shared, then every objective's)."""
    return {**SHARED_RULES, **field_rules(registry.option_fields())}


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
    cfg.objective_options.resolve(cfg, small)  # its own fields; it may also choose e.g. the crop
    if cfg.crop is None:
        cfg.crop = "pad"
    if cfg.pad is None:
        cfg.pad = 4
    if cfg.warmup_epochs is None:
        cfg.warmup_epochs = float(max(1, round(0.05 * cfg.epochs))) if cfg.epochs >= 2 else 0.0
    if cfg.num_workers is None:
        cfg.num_workers = min(8, os.cpu_count() or 1)
    return cfg


def check_values(cfg: PretrainConfig) -> None:
    """Each option on its own against the rule on its field (NaN, infinities, signs, ranges)."""
    check_rules(SHARED_RULES, cfg)
    check_rules(field_rules(fields(cfg.objective_options)), cfg.objective_options)


def validate(cfg: PretrainConfig) -> None:
    """Each value against its field's rule, then the combinations, with a message naming the
    option, its value and what is allowed."""
    def bad(name, allowed):
        raise UserError(f"{flag(name)} {getattr(cfg, name)}: {allowed}")

    check_values(cfg)
    if cfg.compile and cfg.compile_mode != "default" and cfg.accum_steps > 1:
        # CUDA graphs keep gradients in their memory pool, which the next micro-batch's replay
        # overwrites before the gradients are accumulated
        bad("compile_mode", "CUDA graphs (reduce-overhead, max-autotune) cannot accumulate gradients over "
                            f"--accum-steps {cfg.accum_steps}; use --compile-mode default or --accum-steps 1")
    if cfg.weights and not cfg.init_from:
        raise UserError(f"--weights {cfg.weights}: a warm start's weights file; give the encoder with "
                        "--init-from timm:NAME")
    if cfg.img_size % cfg.patch_size:
        raise UserError(f"--img-size {cfg.img_size} is not divisible by --patch-size {cfg.patch_size}; "
                        "choose sizes where img_size = k * patch_size")
    if cfg.batch_size % cfg.accum_steps:
        raise UserError(f"--batch-size {cfg.batch_size} is not divisible by --accum-steps {cfg.accum_steps}")
    width, _, heads = PRESETS[cfg.model]
    width, heads = cfg.width or width, cfg.heads or heads
    if width % heads or width % 4:
        raise UserError(f"--width {width} must be divisible by --heads {heads} and by 4")
    if cfg.min_lr > cfg.peak_lr():
        bad("min_lr", f"must not exceed the peak learning rate {cfg.peak_lr():g} (from --lr, or --base-lr and "
                      "--batch-size)")
    if cfg.crop == "pad" and not cfg.pad < cfg.img_size:
        bad("pad", f"must be in [0, {cfg.img_size})")
    if cfg.warmup_epochs > cfg.epochs:
        bad("warmup_epochs", f"must not exceed --epochs {cfg.epochs}")
    cfg.objective_options.validate(cfg)


RUN_CONFIG_KEYS = ("objective", "data")


def read_run_config(path: Path) -> dict:
    """A run's config.json: valid JSON and a run config (an object naming its objective and data)."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a run config (expected a JSON object of `unmasked pretrain` options, "
                        f"found {type(data).__name__}); restore the file `unmasked pretrain` wrote")
    missing = [k for k in RUN_CONFIG_KEYS if not isinstance(data.get(k), str)]
    if missing:
        raise UserError(f"{path}: not a run config (no {' or '.join(missing)}); restore the file "
                        "`unmasked pretrain` wrote")
    return data
