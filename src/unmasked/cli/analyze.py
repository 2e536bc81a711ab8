"""`unmasked analyze`: attention distance, maps, NMI, spectrum and reconstructions of one encoder."""

from __future__ import annotations

import argparse
from pathlib import Path

from unmasked.analysis import analyze
from unmasked.cli.common import Formatter, add_eval_common, on_encoder, refuse_a_file_as_folder
from unmasked.console import print_analysis
from unmasked.errors import UserError


def add_parser(sub) -> None:
    an = sub.add_parser("analyze", help="attention distance, attention maps, NMI, spectrum, reconstructions",
                        formatter_class=Formatter,
                        description="All analyses of one encoder on a fixed sample of held-out images, run on "
                                    "all tokens in float32. Writes JSON and PNG files into <run>/analysis/.")
    add_eval_common(an)
    an.add_argument("--images", type=int, default=1000,
                    help="images for attention distance and NMI (default: 1000)")
    an.add_argument("--map-images", type=int, default=4, help="images shown in the figures (default: 4)")
    an.add_argument("--layers", type=int, nargs="+", default=None, metavar="L",
                    help="layers (1-based) for the patch-query attention maps (default: first, middle, last)")
    an.add_argument("--out", default=None, help="output folder (default: <run>/analysis); for a source, its "
                    "results folder (analyses in <out>/analysis)")
    an.set_defaults(func=lambda args: on_encoder(args, "analyze", run))


def run(args: argparse.Namespace) -> int:
    if args.images < 1 or args.map_images < 1 or args.batch_size < 1:
        raise UserError("--images, --map-images and --batch-size must be positive integers")
    refuse_a_file_as_folder(args.out, "--out")
    layers = None if args.layers is None else [v - 1 for v in args.layers]
    r = analyze.analyze(args.run, data=args.data, device=args.device, images=args.images,
                        map_images=args.map_images, patch_layers=layers, batch_size=min(args.batch_size, 100),
                        out=args.out, progress=not args.no_progress)
    print_analysis(r, args.out or str(Path(r["encoder"]).parent / "analysis"))
    return 0
