"""How an option is declared: `opt(default, help, group, rule=...)` makes a dataclass field whose
metadata is its command-line flag, its --help text and the values it accepts (its `Rule`).

This module is below every other one (it imports only unmasked.errors), so the shared
configuration, each objective's options dataclass, each command's settings dataclass and the rule
tables all declare options the same way, and an option's rule lives only on its field.
`argument(field)` is the one place a field becomes an argparse option.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field

from unmasked.errors import UserError


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


def opt(default, help: str, group: str = "training", choices=None, metavar=None, parse=None,
        rule: Rule | None = None, nargs=None):
    """A config field and its command-line option; `rule` says which values it accepts, `nargs`
    ("+") that the option takes several values (the default is then a tuple). `choices` may be a
    function, called when the parser is built (the registered objectives, say)."""
    return field(default=default, metadata={"help": help, "group": group, "choices": choices,
                                            "metavar": metavar, "parse": parse, "rule": rule,
                                            "nargs": nargs})


def flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def field_type(f) -> Callable[[str], object]:
    """What argparse converts the option's text with: the field's `parse`, else its annotation's
    number type (int, float; also for `int | None` and `tuple[int, ...]`), else text."""
    if f.metadata.get("parse"):
        return f.metadata["parse"]
    t = str(f.type)
    if "int" in t:
        return int
    if "float" in t:
        return float
    return str


def shown(value) -> str:
    return " ".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def argument(f, typed_only: bool = False) -> tuple[str, dict]:
    """The argparse option of one field: (flag, add_argument keywords).

    A switch (a bool field) is `--x` (store_true), or `--x/--no-x` with `typed_only`; any other
    field takes its type, choices, metavar and nargs from the field. The help ends with the
    default unless it says its own ("default: sized to the data") or the default is None.
    `typed_only`: the default is argparse.SUPPRESS, so that only the options typed appear on the
    namespace (pretrain's `explicit`) and the help is left to the caller."""
    meta = f.metadata
    default = None if f.default is MISSING else f.default
    help_text = meta["help"]
    kwargs: dict = {"dest": f.name}
    if isinstance(default, bool) or "bool" in str(f.type):
        kwargs["action"] = argparse.BooleanOptionalAction if typed_only else "store_true"
    else:
        kwargs["type"] = field_type(f)
        kwargs.update({k: meta[k] for k in ("choices", "metavar", "nargs") if meta.get(k)})
        if callable(kwargs.get("choices")):
            kwargs["choices"] = kwargs["choices"]()
        if not typed_only and default is not None and "default" not in help_text:
            help_text += f" (default: {shown(default)})"
    kwargs["default"] = argparse.SUPPRESS if typed_only else default
    kwargs["help"] = help_text
    return flag(f.name), kwargs


def field_rules(dataclass_fields) -> dict[str, Rule]:
    """{name: rule} of the fields that declare one (`opt(..., rule=...)`)."""
    return {f.name: f.metadata["rule"] for f in dataclass_fields if f.metadata.get("rule") is not None}


def check_rules(table: dict[str, Rule], values) -> None:
    """Every option in `table` present on `values` (a Namespace, a config, an options dataclass)
    and not None must satisfy its rule; the first that does not is a UserError naming it."""
    for dest, rule in table.items():
        value = getattr(values, dest, None)
        if value is None or rule.accepts is None:
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if not rule.accepts(v):
                raise UserError(f"{flag(dest)} {v}: {rule.allowed}")
