"""The `unmasked` command line: pretrain, eval, analyze, compare, study, embed, show, export, ...

One module per command; each adds its parser and names the function that runs it
(`set_defaults(func=...)`). What the commands print is in unmasked.console.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from unmasked import __version__
from unmasked.cli import (
    analyze,
    bench,
    compare,
    demo,
    embed,
    evaluate,
    export,
    pretrain,
    show,
    study,
)
from unmasked.cli.common import Formatter
from unmasked.data.image_folder import set_max_image_pixels
from unmasked.errors import TrainingStopped, UserError
from unmasked.notes import tolerate_any_encoding
from unmasked.objectives import registry
from unmasked.option_rules import check_values, command_of

COMMANDS = (pretrain, evaluate, analyze, compare, bench, study, demo, embed, show, export)  # --help order


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unmasked",
        description="Pretrain Vision Transformer encoders with self-supervised objectives "
                    f"({', '.join(registry.names())}) and measure what they learned.",
        formatter_class=Formatter,
    )
    parser.add_argument("--version", action="version", version=f"unmasked {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    tolerate_any_encoding()
    try:
        return _main(argv)
    except BrokenPipeError:  # `unmasked ... | head -1`: the reader left; nothing more to say
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail again
        return 141  # 128 + SIGPIPE, as a shell reports a command ended by a closed pipe


def _main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    warnings.simplefilter("default")
    try:
        if command_of(args):
            check_values(command_of(args), args)  # every option, before any slow work
        if args.command != "pretrain" and getattr(args, "max_image_pixels", None):
            set_max_image_pixels(args.max_image_pixels)  # pretrain takes it from its config
        return args.func(args)
    except UserError as e:
        print(f"unmasked: error: {e}", file=sys.stderr)
        return 2
    except TrainingStopped as e:
        print(f"unmasked: training stopped: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("unmasked: interrupted", file=sys.stderr)
        return 130
