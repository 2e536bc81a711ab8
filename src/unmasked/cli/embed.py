"""`unmasked embed`: CLS and mean-pooled embeddings of every image (safetensors + CSV)."""

from __future__ import annotations

import argparse
from contextlib import nullcontext
from pathlib import Path

from unmasked.cli.common import TOOL_SOURCE_HELP, Formatter, add_tool_source_options, settings_of
from unmasked.eval import embed
from unmasked.lock import run_folder_of, run_lock
from unmasked.option_rules import add_settings


def add_parser(sub) -> None:
    e = sub.add_parser("embed", help="CLS and mean-pooled embeddings of every image (safetensors + CSV)",
                       formatter_class=Formatter,
                       description="Runs the encoder on every image of --data (training and held-out splits, "
                                   "in the evaluation view) and writes FILE.safetensors with `cls` and `mean` "
                                   "(N, D) float32 (and `labels` for labeled data), and FILE.csv with each row's "
                                   "split, image file, label and class. Features are cached by content, as the "
                                   "evaluations cache theirs.",
                       epilog="example:\n  unmasked embed runs/lut-fm --data path/to/images --out emb.safetensors")
    e.add_argument("source", metavar="SOURCE", help=TOOL_SOURCE_HELP)
    add_tool_source_options(e)
    add_settings(e, "embed")
    e.add_argument("--out", required=True, metavar="FILE", help="output .safetensors (the .csv goes beside it)")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    e.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_of(args, embed.EmbedSettings)
    source = Path(args.source)
    lock = run_lock(run_folder_of(source), "embed", must_write=False) if source.exists() else nullcontext()
    with lock:
        r = embed.embed(args.source, args.out, data=settings.data, device=settings.device,
                        batch_size=settings.batch_size, num_workers=settings.num_workers,
                        progress=not args.no_progress, weights=args.weights, img_size=args.img_size,
                        seed=settings.seed)
    split_text = ", ".join(f"{n:,} {s}" + (" (cached)" if r["cached"][s] else "") for s, n in r["splits"].items())
    print(f"embedded {r['images']:,} images of {r['data']} ({split_text}) -> {r['dim']}-d CLS and mean-pooled")
    print(f"  {r['file']}\n  {r['csv']}")
    return 0
