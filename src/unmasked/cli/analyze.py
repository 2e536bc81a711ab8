"""`unmasked analyze`: attention distance, maps, NMI, spectrum and reconstructions of one encoder."""

from __future__ import annotations

import argparse
from pathlib import Path

from unmasked.analysis import analyze
from unmasked.cli.common import (
    Formatter,
    add_encoder_command,
    on_encoder,
    refuse_a_file_as_folder,
    settings_of,
)
from unmasked.console import print_analysis, warn_unsaved


def add_parser(sub) -> None:
    an = sub.add_parser("analyze", help="attention distance, attention maps, NMI, spectrum, reconstructions",
                        formatter_class=Formatter,
                        description="All analyses of one encoder on a fixed sample of held-out images, run on "
                                    "all tokens in float32. Writes JSON and PNG files into <run>/analysis/.")
    add_encoder_command(an, "analyze", out_help=None)
    an.add_argument("--out", default=None, help="output folder (default: <run>/analysis); for a source, its "
                    "results folder (analyses in <out>/analysis)")
    an.set_defaults(func=lambda args: on_encoder(args, "analyze", run))


def run(args: argparse.Namespace) -> int:
    refuse_a_file_as_folder(args.out, "--out")
    settings = settings_of(args, analyze.AnalyzeSettings)
    layers = None if settings.layers is None else [v - 1 for v in settings.layers]
    r = analyze.analyze(args.run, data=args.data, device=args.device, images=settings.images,
                        map_images=settings.map_images, patch_layers=layers, batch_size=min(args.batch_size, 100),
                        out=args.out, progress=not args.no_progress)
    print_analysis(r, args.out or str(Path(r["encoder"]).parent / "analysis"))
    return warn_unsaved(r)
