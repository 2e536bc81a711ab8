"""`unmasked embed`: CLS and mean-pooled embeddings of every image (safetensors + CSV)."""

from __future__ import annotations

import argparse
import os
from contextlib import nullcontext
from pathlib import Path

from unmasked.cli.common import TOOL_SOURCE_HELP, Formatter, add_tool_source_options
from unmasked.eval import embed
from unmasked.lock import run_folder_of, run_lock


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
    e.add_argument("--seed", type=int, default=0, help="a random: source's seed (default: 0)")
    e.add_argument("--data", default=None, help="dataset to embed (default: the encoder's own)")
    e.add_argument("--out", required=True, metavar="FILE", help="output .safetensors (the .csv goes beside it)")
    e.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N' (default: auto)")
    e.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default: 256)")
    e.add_argument("--num-workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="decoding workers for image folders")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    e.add_argument("--max-image-pixels", type=int, default=None, metavar="N",
                   help="skip images with more pixels than this (default: 100000000, as in pretrain)")
    e.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    source = Path(args.source)
    lock = run_lock(run_folder_of(source), "embed", must_write=False) if source.exists() else nullcontext()
    with lock:
        r = embed.embed(args.source, args.out, data=args.data, device=args.device, batch_size=args.batch_size,
                        num_workers=args.num_workers, progress=not args.no_progress, weights=args.weights,
                        img_size=args.img_size, seed=args.seed)
    split_text = ", ".join(f"{n:,} {s}" + (" (cached)" if r["cached"][s] else "") for s, n in r["splits"].items())
    print(f"embedded {r['images']:,} images of {r['data']} ({split_text}) -> {r['dim']}-d CLS and mean-pooled")
    print(f"  {r['file']}\n  {r['csv']}")
    return 0
