"""`unmasked show`: per-image figures (CLS attention per head, PCA of patch features, reconstruction)."""

from __future__ import annotations

import argparse

from unmasked.analysis import show
from unmasked.cli.common import TOOL_SOURCE_HELP, Formatter, add_tool_source_options, settings_of
from unmasked.option_rules import add_settings


def add_parser(sub) -> None:
    s = sub.add_parser("show", help="per-image figures: CLS attention per head, PCA of patch features, "
                                    "reconstruction", formatter_class=Formatter,
                       description="One figure per image in --out: the image as the encoder sees it, the first "
                                   "three principal components of its patch features as RGB, the last block's "
                                   "CLS-to-patch attention of every head and, for MAE / LUT runs, a masked view "
                                   "and its reconstruction. Images of any size are brought to the encoder's "
                                   "input size as --aspect says (stated in each figure).")
    s.add_argument("source", metavar="SOURCE", help=TOOL_SOURCE_HELP)
    add_tool_source_options(s)
    s.add_argument("--data", default=None, help="random: sources: the data giving input size and normalisation")
    s.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any size, any format PIL reads)")
    s.add_argument("--out", required=True, metavar="DIR", help="folder for the figures and show.json")
    add_settings(s, "show")
    s.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N' (default: auto)")
    s.add_argument("--max-image-pixels", type=int, default=None, metavar="N",
                   help="refuse images with more pixels than this (default: 100000000)")
    s.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_of(args, show.ShowSettings)
    r = show.show(args.source, args.images, args.out, device=args.device, aspect=settings.aspect,
                  seed=settings.seed, weights=args.weights, img_size=args.img_size, data=args.data)
    print(f"{len(r['images'])} figure(s) in {args.out} (input {r['input_size'][0]}x{r['input_size'][1]}, "
          f"aspect: {args.aspect}): " + ", ".join(e["figure"] for e in r["images"]))
    return 0
