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
    MAX_SEED,
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
               "max_image_pixels": PIXELS, "weights": PATH}
EVAL_OUT = {"out": PATH}  # a source's results folder

# command-line only options of pretrain (not saved in config.json)
PRETRAIN_CLI = {"resume": FLAG, "knn": FLAG, "no_progress": FLAG}

RULES: dict[str, dict[str, Rule]] = {
    "pretrain": PRETRAIN_CLI,  # and the fields' rules: see rules()
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
    "bench": {"steps": positive_int(), "warmup": positive_int(), "with_augment": FLAG, "path": FLAG,
              "baseline": FLAG, "profile": PATH, "json": PATH},
    "demo": {"out": PATH, "device": DEVICE, "no_progress": FLAG, "objective": CHOICE, "transcript": PATH},
    "study": {"file": PATH, "dry_run": FLAG, "report_only": FLAG, "out": PATH, "results_dir": PATH, "device": DEVICE,
              "no_progress": FLAG},
    "embed": {"source": PATH, "data": TEXT, "out": PATH, "device": DEVICE, "batch_size": positive_int(),
              "num_workers": count("decode in the main process"), "no_progress": FLAG, "max_image_pixels": PIXELS,
              "weights": PATH, "img_size": positive_int(), "seed": int_range(0, MAX_SEED, "seed 0, like any other")},
    "show": {"source": PATH, "images": PATH, "out": PATH, "aspect": CHOICE, "seed": count("seed 0, like any other"),
             "device": DEVICE, "max_image_pixels": PIXELS, "weights": PATH, "img_size": positive_int(), "data": TEXT},
    "export": {"run": PATH, "dir": PATH, "format": CHOICE, "force": FLAG},
}


def rules(command: str) -> dict[str, Rule]:
    """The rules of `command`; pretrain's are those its options' fields declare, and bench takes
    pretrain's options beside its own."""
    if command == "pretrain":
        return {**pretrain_rules(), **PRETRAIN_CLI}
    if command == "bench":
        return {**pretrain_rules(), **RULES[command]}
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
