"""What every command-line option accepts: one rule per option of every command, checked before
any slow work, so a bad value exits 2 naming the option instead of a traceback deep in torch or a
silently absurd run (a NaN temperature once gave 10% kNN accuracy, written to knn.json).

Numeric rules reject NaN and infinities. A rule that accepts 0 says what 0 means (`at_zero`), as
the help text does. Options that are not numbers are registered as TEXT, PATH, CHOICE or FLAG:
argparse checks choices and flags, the command checks paths when it opens them. Pretrain's rules
are read from the fields that declare its options (`opt(..., rule=...)`: the shared config and
each objective's options); the other commands' are listed here. A test walks every option of
every subcommand, so a new option without a rule fails it.
"""

from __future__ import annotations

from unmasked.config import pretrain_rules
from unmasked.devices import resolve_device
from unmasked.options import (
    CHOICE,
    DEVICE,
    FLAG,
    PATH,
    PIXELS,
    TEXT,
    Rule,
    check_rules,
    count,
    fraction,
    int_range,
    non_negative,
    positive,
    positive_int,
    up_to_one,
)

EVAL_COMMON = {"run": PATH, "data": TEXT, "device": DEVICE, "batch_size": positive_int(),
               "num_workers": count("decode in the main process"), "no_progress": FLAG,
               "max_image_pixels": PIXELS}

# command-line only options of pretrain (not saved in config.json)
PRETRAIN_CLI = {"resume": FLAG, "knn": FLAG, "no_progress": FLAG}

RULES: dict[str, dict[str, Rule]] = {
    "pretrain": PRETRAIN_CLI,  # and the fields' rules: see rules()
    "eval knn": {**EVAL_COMMON, "k": positive_int(), "temperature": positive(), "img_size": positive_int()},
    "eval linear": {**EVAL_COMMON, "epochs": positive_int(), "warmup_epochs": count("no warm-up"),
                    "optimizer": CHOICE, "base_lr": positive(), "probe_batch": positive_int(),
                    "img_size": positive_int()},
    "eval finetune": {**EVAL_COMMON, "epochs": positive_int(), "warmup_epochs": count("no warm-up"),
                      "base_lr": positive(), "layer_decay": up_to_one(), "drop_path": fraction("no stochastic depth"),
                      "mixup": non_negative("mixup off"), "cutmix": non_negative("cutmix off"),
                      "label_smoothing": fraction("plain cross-entropy"),
                      "randaug_magnitude": int_range(0, 10, "RandAugment's operations at zero strength"),
                      "train_batch": positive_int(), "subset": positive_int(), "steps": positive_int()},
    "analyze": {**EVAL_COMMON, "images": positive_int(), "map_images": positive_int(), "layers": positive_int(),
                "out": PATH},
    "compare": {"runs": PATH, "out": PATH, "no_compute": FLAG, "device": DEVICE, "no_progress": FLAG},
    "bench": {"objective": CHOICE, "model": CHOICE, "img_size": positive_int(), "patch_size": positive_int(),
              "channels": CHOICE, "batch_size": positive_int(), "steps": positive_int(), "warmup": positive_int(),
              "device": DEVICE, "precision": CHOICE, "compile": FLAG, "compile_mode": CHOICE,
              "grad_checkpoint": FLAG, "with_augment": FLAG, "fuse_views": FLAG, "path": FLAG, "baseline": FLAG,
              "profile": PATH, "json": PATH},
    "demo": {"out": PATH, "device": DEVICE, "no_progress": FLAG, "objective": CHOICE},
    "study": {"file": PATH, "dry_run": FLAG, "report_only": FLAG, "out": PATH, "device": DEVICE,
              "no_progress": FLAG},
}


def rules(command: str) -> dict[str, Rule]:
    """The rules of `command`; pretrain's are those its options' fields declare."""
    if command == "pretrain":
        return {**pretrain_rules(), **PRETRAIN_CLI}
    return dict(RULES[command])


def check_values(command: str, values) -> None:
    """Every option of `command` present on `values` (an argparse Namespace) and not None must
    satisfy its rule; the first that does not is a UserError naming it."""
    table = rules(command)
    for dest, rule in table.items():
        if rule is DEVICE and getattr(values, dest, None) is not None:
            resolve_device(getattr(values, dest))  # raises naming --device
    check_rules(table, values)


def command_of(args) -> str | None:
    """'eval knn' for `unmasked eval knn ...`; the key of RULES."""
    if args.command == "eval":
        return f"eval {args.protocol}" if getattr(args, "protocol", None) else None
    return args.command
