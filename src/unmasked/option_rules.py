"""What every command accepts: each command's settings (the dataclasses that declare its options,
in the modules that use them), the argparse options generated from them, and one rule per option,
checked before any slow work, so a bad value exits 2 naming the option instead of a traceback deep
in torch or a silently absurd run (a NaN temperature once gave 10% kNN accuracy, written to knn.json).

Numeric rules reject NaN and infinities. A rule that accepts 0 says what 0 means (`at_zero`), as
the help text does. Options that are not numbers are registered as TEXT, PATH, CHOICE or FLAG:
argparse checks choices and flags, the command checks paths when it opens them. Rules are read
from the fields that declare the options (`opt(..., rule=...)`: the shared config, each
objective's options, each command's settings); the command line's own options (a command's
positional arguments, --out, --no-progress, ...) are listed here. A test walks every option of
every subcommand, so a new option without a rule fails it.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields

from unmasked.analysis.analyze import AnalyzeSettings
from unmasked.analysis.report import CompareSettings
from unmasked.analysis.show import ShowSettings
from unmasked.bench import BenchOptions
from unmasked.config import all_option_fields, pretrain_rules
from unmasked.demo import DemoSettings
from unmasked.devices import resolve_device
from unmasked.eval.common import EvalOptions
from unmasked.eval.embed import EmbedSettings
from unmasked.eval.finetune import FinetuneOptions
from unmasked.eval.knn import KnnSettings
from unmasked.eval.linear import LinearRecipe
from unmasked.export import ExportSettings
from unmasked.objectives import registry
from unmasked.options import (
    DEVICE,
    FLAG,
    PATH,
    PIXELS,
    TEXT,
    Rule,
    argument,
    check_rules,
    positive_int,
)
from unmasked.study.settings import StudySettings

# Each command's settings, in the order its --help shows them.
SETTINGS: dict[str, tuple[type, ...]] = {
    "eval knn": (EvalOptions, KnnSettings),
    "eval linear": (EvalOptions, LinearRecipe),
    "eval finetune": (EvalOptions, FinetuneOptions),
    "analyze": (EvalOptions, AnalyzeSettings),
    "bench": (BenchOptions,),
    "compare": (CompareSettings,),
    "show": (ShowSettings,),
    "demo": (DemoSettings,),
    "study": (StudySettings,),
    "embed": (EmbedSettings,),
    "export": (ExportSettings,),
}

EVAL_CLI = {"run": PATH, "no_progress": FLAG, "out": PATH}  # the source, its results folder

# the command line's own options of each command (not settings of the library)
CLI_RULES: dict[str, dict[str, Rule]] = {
    "pretrain": {"resume": FLAG, "knn": FLAG, "no_progress": FLAG},  # not saved in config.json
    "eval knn": EVAL_CLI,
    "eval linear": EVAL_CLI,
    "eval finetune": EVAL_CLI,
    "analyze": EVAL_CLI,  # --out: the analyses' folder
    "compare": {"runs": PATH, "out": PATH, "no_progress": FLAG},
    "bench": {"baseline": FLAG, "json": PATH},  # and pretrain's options (those bench offers)
    "demo": {"out": PATH, "no_progress": FLAG, "transcript": PATH},
    "study": {"file": PATH, "out": PATH, "results_dir": PATH, "no_progress": FLAG},
    "embed": {"source": PATH, "out": PATH, "no_progress": FLAG, "weights": PATH, "img_size": positive_int()},
    "show": {"source": PATH, "images": PATH, "out": PATH, "device": DEVICE, "max_image_pixels": PIXELS,
             "weights": PATH, "img_size": positive_int(), "data": TEXT},
    "export": {"run": PATH, "dir": PATH},
}


def settings_fields(command: str, skip: frozenset[str] = frozenset()) -> list:
    return [f for cls in SETTINGS.get(command, ()) for f in fields(cls) if f.name not in skip]


def add_settings(parser, command: str, skip: frozenset[str] = frozenset()) -> None:
    """The options of `command`'s settings dataclasses, each from its field (`argument`)."""
    for f in settings_fields(command, skip):
        name, kwargs = argument(f)
        parser.add_argument(name, **kwargs)


def settings_parser(command: str) -> argparse.ArgumentParser:
    """A parser of `command`'s settings alone (no positional source, --out or --no-progress): what a
    study's [evals] table may set, typed and refused as the command line types and refuses them."""
    parser = argparse.ArgumentParser(prog=f"unmasked {command}", add_help=False)
    add_settings(parser, command)
    return parser


GROUP_TITLES = {
    "objective": "objective",
    "data": "data and augmentation",
    "model": "model",
    "training": "optimisation",
    "performance": "speed and memory",
    "run": "run control",
}


def add_pretrain_options(parser, skip: frozenset[str] = frozenset()) -> None:
    """Pretrain's options, one per field of the shared config and of every objective's options,
    grouped as GROUP_TITLES says (an objective's own options under the objectives that have them).
    Only the options typed reach the namespace, so pretrain knows which were given (`explicit`)."""
    groups = {k: parser.add_argument_group(v) for k, v in GROUP_TITLES.items()}
    for f in all_option_fields():
        if f.name in skip:
            continue
        group = f.metadata["group"]
        if group not in groups:
            groups[group] = parser.add_argument_group(f"options of {' and '.join(registry.option_owners(f.name))}")
        name, kwargs = argument(f, typed_only=True)
        kwargs["help"] = _pretrain_help(f)
        if f.name == "objective":
            kwargs["choices"] = registry.names()
        groups[group].add_argument(name, **kwargs)


def _pretrain_help(f) -> str:
    """The field's help, its default, and what an objective sets otherwise where it is not given."""
    default = None if f.default is MISSING else f.default
    help_text = f.metadata["help"]
    own = "".join(f"; {e.name}: {_shown(e.defaults[f.name])}" for e in registry.entries() if f.name in e.defaults)
    if default is not None and not isinstance(default, bool):
        return help_text + f" (default: {default}{own})"
    help_text += f" ({own[2:]})" if own else ""
    return help_text + (f" (default: {'on' if default else 'off'})" if isinstance(default, bool) else "")


def _shown(value) -> str:
    return "from the data and model" if value is None else str(value)


def rules(command: str) -> dict[str, Rule]:
    """The rules of `command`: those its settings' fields declare and its command-line options';
    pretrain's are those its options' fields declare, and bench takes pretrain's options beside
    its own."""
    own = {**CLI_RULES[command], **{f.name: f.metadata["rule"] for f in settings_fields(command)}}
    return {**pretrain_rules(), **own} if command in ("pretrain", "bench") else own



def check_values(command: str, values) -> None:
    """Every option of `command` present on `values` (an argparse Namespace) and not None must
    satisfy its rule; the first that does not is a UserError naming it."""
    table = rules(command)
    for dest, rule in table.items():
        if rule is DEVICE and getattr(values, dest, None) is not None:
            resolve_device(getattr(values, dest))  # raises naming --device
    check_rules(table, values)


def command_of(args) -> str | None:
    """'eval knn' for `unmasked eval knn ...`; a key of CLI_RULES."""
    if args.command == "eval":
        return f"eval {args.protocol}" if getattr(args, "protocol", None) else None
    return args.command
