"""What every command-line option accepts: one rule per option of every command, checked before
any slow work, so a bad value exits 2 naming the option instead of a traceback deep in torch or a
silently absurd run (a NaN temperature once gave 10% kNN accuracy, written to knn.json).

Numeric rules reject NaN and infinities. A rule that accepts 0 says what 0 means (`at_zero`), as
the help text does. Options that are not numbers are registered as TEXT, PATH, CHOICE or FLAG:
argparse checks choices and flags, the command checks paths when it opens them. A test walks
every option of every subcommand, so a new option without a rule here fails it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    allowed: str  # printed after the option and its value: "--k 0: must be a positive integer"
    accepts: Callable[[float], bool] | None = None  # None: not a number
    at_zero: str | None = None  # what 0 means, for rules that accept it


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def positive_int() -> Rule:
    return Rule("must be a positive integer", lambda v: _number(v) and v >= 1)


def count(at_zero: str) -> Rule:
    return Rule("must be 0 or a positive integer", lambda v: _number(v) and v >= 0, at_zero)


def positive() -> Rule:
    return Rule("must be a finite number above 0", lambda v: _number(v) and v > 0)


def non_negative(at_zero: str) -> Rule:
    return Rule("must be a finite number >= 0", lambda v: _number(v) and v >= 0, at_zero)


def fraction(at_zero: str) -> Rule:
    return Rule("must be in [0, 1)", lambda v: _number(v) and 0 <= v < 1, at_zero)


def open_unit() -> Rule:
    return Rule("must be in the open interval (0, 1)", lambda v: _number(v) and 0 < v < 1)


def unit(at_zero: str) -> Rule:
    return Rule("must be in [0, 1]", lambda v: _number(v) and 0 <= v <= 1, at_zero)


def up_to_one() -> Rule:
    return Rule("must be in (0, 1]", lambda v: _number(v) and 0 < v <= 1)


def int_range(lo: int, hi: int, at_zero: str) -> Rule:
    return Rule(f"must be an integer in [{lo}, {hi}]", lambda v: _number(v) and lo <= v <= hi, at_zero)


TEXT = Rule("text")
PATH = Rule("a path, checked when it is opened")
CHOICE = Rule("one of the listed choices (argparse checks)")
FLAG = Rule("a switch")
DEVICE = Rule("auto, cpu, cuda or cuda:N")

# torch.manual_seed takes 64 bits; larger seeds overflow there, after the run folder is locked
MAX_SEED = 2**63 - 1

# Image decoding bound (data/image_folder.py); an option of pretrain and of every evaluation.
PIXELS = positive_int()

PRETRAIN = {
    "objective": CHOICE, "data": TEXT, "out": PATH, "model": CHOICE, "img_size": positive_int(),
    "patch_size": positive_int(), "width": positive_int(), "depth": positive_int(), "heads": positive_int(),
    "decoder_width": positive_int(), "decoder_depth": positive_int(), "decoder_heads": positive_int(),
    "drop_path": fraction("no stochastic depth"), "init_from": PATH, "mask_ratio": open_unit(),
    "norm_pix_loss": FLAG, "lut_weight": non_negative("the patch loss only, no global-context loss"),
    "ema_momentum": unit("the teacher copies the student at every step"), "proj_hidden": positive_int(),
    "fuse_views": FLAG, "crop": CHOICE, "crop_scale_min": up_to_one(), "pad": count("no padding"),
    "epochs": positive_int(), "warmup_epochs": non_negative("no warm-up"), "batch_size": positive_int(),
    "accum_steps": Rule("must be a positive integer or 'auto'",
                        lambda v: v == "auto" or (_number(v) and v >= 1)), "base_lr": positive(), "lr": positive(), "lr_scaling": CHOICE,
    "min_lr": non_negative("the cosine decays to zero"), "weight_decay": non_negative("no weight decay"),
    "clip_grad": positive(), "subset": positive_int(), "channels": CHOICE,
    "cache_gb": non_negative("never decode into memory; stream every image from disk"),
    "num_workers": count("decode in the main process"), "strict": FLAG, "unlabeled": FLAG,
    "seed": int_range(0, MAX_SEED, "seed 0, like any other seed"), "device": DEVICE, "precision": CHOICE, "compile": FLAG,
    "compile_mode": CHOICE, "grad_checkpoint": FLAG, "save_every": positive_int(),
    "save_every_steps": positive_int(), "log_every": positive_int(), "steps": positive_int(), "nan": CHOICE, "on_collapse": CHOICE,
    "max_image_pixels": PIXELS, "decay_tokens": FLAG, "teacher_mode": CHOICE, "memory_check": FLAG,
    "weight_decay_end": non_negative("the weight decay falls to zero by the end"),
    "layer_decay": up_to_one(), "patch_embed_lr_mult": non_negative("the patch embedding is not trained"),
    "knn_every": positive(), "tensorboard": FLAG,
    # command-line only
    "resume": FLAG, "knn": FLAG, "no_progress": FLAG,
}

EVAL_COMMON = {"run": PATH, "data": TEXT, "device": DEVICE, "batch_size": positive_int(),
               "num_workers": count("decode in the main process"), "no_progress": FLAG,
               "max_image_pixels": PIXELS, "weights": PATH}
EVAL_OUT = {"out": PATH}  # a source's results folder

RULES: dict[str, dict[str, Rule]] = {
    "pretrain": PRETRAIN,
    "eval knn": {**EVAL_COMMON, **EVAL_OUT, "k": positive_int(), "temperature": positive(), "img_size": positive_int()},
    "eval linear": {**EVAL_COMMON, **EVAL_OUT, "epochs": positive_int(), "warmup_epochs": count("no warm-up"),
                    "optimizer": CHOICE, "base_lr": positive(), "probe_batch": positive_int(),
                    "img_size": positive_int()},
    "eval finetune": {**EVAL_COMMON, **EVAL_OUT, "epochs": positive_int(), "warmup_epochs": count("no warm-up"),
                      "lr_rule": CHOICE, "base_lr": positive(), "layer_decay": up_to_one(),
                      "drop_path": fraction("no stochastic depth"),
                      "mixup": non_negative("mixup off"), "cutmix": non_negative("cutmix off"),
                      "label_smoothing": fraction("plain cross-entropy"),
                      "randaug_magnitude": int_range(0, 10, "RandAugment's operations at zero strength"),
                      "train_batch": positive_int(), "subset": positive_int(), "steps": positive_int()},
    "analyze": {**EVAL_COMMON, "images": positive_int(), "map_images": positive_int(), "layers": positive_int(),
                "out": PATH},
    "compare": {"runs": PATH, "out": PATH, "no_compute": FLAG, "device": DEVICE, "no_progress": FLAG},
    # pretrain's options (those bench offers) and bench's own
    "bench": {**PRETRAIN, "steps": positive_int(), "warmup": positive_int(), "with_augment": FLAG, "path": FLAG,
              "baseline": FLAG, "profile": PATH, "json": PATH},
    "demo": {"out": PATH, "device": DEVICE, "no_progress": FLAG, "objective": CHOICE, "transcript": PATH},
    "study": {"file": PATH, "dry_run": FLAG, "report_only": FLAG, "out": PATH, "results_dir": PATH, "device": DEVICE,
              "no_progress": FLAG},
    "embed": {"source": PATH, "data": TEXT, "out": PATH, "device": DEVICE, "batch_size": positive_int(),
              "num_workers": count("decode in the main process"), "no_progress": FLAG, "max_image_pixels": PIXELS},
    "show": {"source": PATH, "images": PATH, "out": PATH, "aspect": CHOICE, "seed": count("seed 0, like any other"),
             "device": DEVICE, "max_image_pixels": PIXELS},
    "export": {"run": PATH, "dir": PATH, "format": CHOICE, "force": FLAG},
}


def rules(command: str) -> dict[str, Rule]:
    """The rules of `command`; pretrain's include those each registered objective declares on its
    own options (`config.opt(..., rule=...)`), so a plug-in objective brings its validation along."""
    table = dict(RULES[command])
    if command in ("pretrain", "bench"):
        from unmasked.objectives import registry

        for f in registry.option_fields():
            if f.name not in table and f.metadata.get("rule") is not None:
                table[f.name] = f.metadata["rule"]
    return table


def flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def check_values(command: str, values) -> None:
    """Every option of `command` present on `values` (an argparse Namespace or a config) and not
    None must satisfy its rule; the first that does not is a UserError naming it."""
    from unmasked.devices import resolve_device
    from unmasked.errors import UserError

    for dest, rule in rules(command).items():
        value = getattr(values, dest, None)
        if value is None:
            continue
        if rule is DEVICE:
            resolve_device(value)  # raises naming --device
            continue
        if rule.accepts is None:
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if not rule.accepts(v):
                raise UserError(f"{flag(dest)} {v}: {rule.allowed}")


def command_of(args) -> str | None:
    """'eval knn' for `unmasked eval knn ...`; the key of RULES."""
    if args.command == "eval":
        return f"eval {args.protocol}" if getattr(args, "protocol", None) else None
    return args.command
