"""What several commands share: the help layout, the options of every evaluation, sources resolved
to results folders, and checks of output paths."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import fields
from typing import TypeVar

from unmasked.errors import UserError
from unmasked.lock import run_folder_of, run_lock
from unmasked.option_rules import add_settings
from unmasked.sources import is_source, prepare

T = TypeVar("T")

SOURCE_HELP = ("run folder, checkpoint.pt or encoder.safetensors; a results folder; or a source: timm:NAME, "
               "hf-hub:ORG/NAME, local-dir:PATH, random:PRESET[/PATCH] (its results go to --out)")
OUT_HELP = "a source's results folder (for timm:, hf-hub:, local-dir:, random:; read by compare and study)"
TOOL_SOURCE_HELP = ("run folder, checkpoint.pt or encoder.safetensors, the results folder of a public or random "
                    "encoder, or a source: timm:NAME (with --weights), hf-hub:ORG/NAME, local-dir:PATH, "
                    "random:PRESET[/PATCH] (with --data)")


def add_tool_source_options(p) -> None:
    """embed's and show's options for a source string (they write no results folder of their own)."""
    p.add_argument("--weights", default=None, metavar="FILE", help="timm:NAME only: load this file offline")
    p.add_argument("--img-size", type=int, default=None, help="a source's input size (default: its own; random: "
                                                               "the data's)")


class Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog):
        super().__init__(prog, max_help_position=34, width=100)


def add_encoder_command(p: argparse.ArgumentParser, command: str, out_help: str | None = OUT_HELP) -> None:
    """An evaluation's options: the encoder (a run or a source), the command's settings, and the
    folder a source's results go to (`out_help` None: the command adds its own --out)."""
    p.add_argument("run", metavar="SOURCE", help=SOURCE_HELP)
    add_settings(p, command)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    if out_help:
        p.add_argument("--out", default=None, metavar="DIR", help=out_help)


def settings_of(args: argparse.Namespace, cls: type[T]) -> T:
    """The settings dataclass `cls` filled from the parsed options."""
    return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


def resolve_source(args: argparse.Namespace) -> None:
    """A source (timm:, hf-hub:, local-dir:, random:) becomes its results folder, written now, so that
    every command downstream reads it as it reads a run folder; its input size is fixed there."""
    if not is_source(args.run):
        if args.weights:
            raise UserError(f"--weights {args.weights}: only for a timm:NAME source; {args.run} brings its own")
        return
    args.run = str(prepare(args.run, args.out, args.data, args.weights, getattr(args, "img_size", None)))
    if hasattr(args, "img_size"):
        args.img_size = None  # the encoder is built at that size
    if args.command == "analyze":
        args.out = None  # <results>/analysis


def on_encoder(args: argparse.Namespace, what: str, body: Callable[[argparse.Namespace], int]) -> int:
    """Run an evaluation or analysis of `args.run` (a source resolved first) holding its run folder's
    lock, so that no pretraining rewrites the checkpoint under it."""
    resolve_source(args)
    with run_lock(run_folder_of(args.run), what, must_write=False):
        return body(args)


def refuse_unwritable_file(path: str, option: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UserError(f"{option} {path}: is a folder, expected a file name")
    if not os.path.isdir(parent):
        raise UserError(f"{option} {path}: no such folder {parent}")
    if not os.access(parent, os.W_OK):
        raise UserError(f"{option} {path}: the folder {parent} is not writable")


def refuse_a_file_as_folder(path: str | None, option: str) -> None:
    if path is not None and os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{option} {path}: is a file, expected a folder (it is written into)")
