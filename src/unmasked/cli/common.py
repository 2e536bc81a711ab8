"""What several commands share: the help layout, pretrain's options (pretrain and bench), the
options of every evaluation, sources resolved to results folders, and checks of output paths."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import MISSING

from unmasked.config import all_option_fields
from unmasked.errors import UserError
from unmasked.lock import run_folder_of, run_lock
from unmasked.objectives import registry
from unmasked.sources import is_source, prepare

GROUP_TITLES = {
    "objective": "objective",
    "data": "data and augmentation",
    "model": "model",
    "training": "optimisation",
    "performance": "speed and memory",
    "run": "run control",
}

SOURCE_HELP = ("run folder, checkpoint.pt or encoder.safetensors; a results folder; or a source: timm:NAME, "
               "hf-hub:ORG/NAME, local-dir:PATH, random:PRESET[/PATCH] (its results go to --out)")
OUT_HELP = "a source's results folder (for timm:, hf-hub:, local-dir:, random:; read by compare and study)"
TOOL_SOURCE_HELP = ("run folder, checkpoint.pt or encoder.safetensors, or the results folder of a public or "
                    "random encoder")
EVAL_SIZE_HELP = ("evaluate at this input size, a multiple of the patch size; the position embedding is "
                  "resampled bicubically to the grid (default: the encoder's own size; another size writes "
                  "its own result file)")


class Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog):
        super().__init__(prog, max_help_position=34, width=100)


def _objective_group_title(group: str, option: str) -> str:
    """An objective's options form their own --help group, titled by the objectives that have them."""
    return f"options of {' and '.join(registry.option_owners(option))}"


def add_config_options(parser: argparse.ArgumentParser, skip: frozenset[str] = frozenset()) -> None:
    groups = {k: parser.add_argument_group(v) for k, v in GROUP_TITLES.items()}
    for f in all_option_fields():
        if f.name in skip:
            continue
        meta = f.metadata
        if meta["group"] not in groups:
            groups[meta["group"]] = parser.add_argument_group(_objective_group_title(meta["group"], f.name))
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        help_text = meta["help"]
        own = "".join(f"; {e.name}: {_shown(e.defaults[f.name])}" for e in registry.entries()
                      if f.name in e.defaults)  # what an objective sets otherwise where it is not given
        if default is not None and not isinstance(default, bool):
            help_text += f" (default: {default}{own})"
        elif own:
            help_text += f" ({own[2:]})"
        kwargs = dict(dest=f.name, default=argparse.SUPPRESS, help=help_text)
        if isinstance(default, bool) or "bool" in str(f.type):
            kwargs["action"] = argparse.BooleanOptionalAction
            if isinstance(default, bool):
                kwargs["help"] = help_text + f" (default: {'on' if default else 'off'})"
        else:
            kwargs["type"] = _field_type(f)
            if meta.get("choices"):
                kwargs["choices"] = meta["choices"]
            if f.name == "objective":
                kwargs["choices"] = registry.names()
            if meta.get("metavar"):
                kwargs["metavar"] = meta["metavar"]
        groups[meta["group"]].add_argument(flag, **kwargs)


def _shown(value) -> str:
    return "from the data and model" if value is None else str(value)


def _field_type(f):
    if f.metadata.get("parse"):
        return f.metadata["parse"]
    t = str(f.type)
    if "int" in t:
        return int
    if "float" in t:
        return float
    return str


def add_eval_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="SOURCE", help=SOURCE_HELP)
    p.add_argument("--weights", default=None, metavar="FILE",
                   help="timm:NAME only: load this file (official .pth, .safetensors, timm file) offline instead "
                        "of downloading; never executes code from it")
    p.add_argument("--data", default=None, help="evaluate on this dataset instead of the run's own")
    p.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N' (default: auto)")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default: 256)")
    p.add_argument("--num-workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="decoding workers for image folders")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--max-image-pixels", type=int, default=None, metavar="N",
                   help="skip images with more pixels than this (default: 100000000, as in pretrain)")


def add_source_out(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, metavar="DIR", help=OUT_HELP)


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
