"""`unmasked pretrain`: one run folder from the shared and the objective's options."""

from __future__ import annotations

import argparse
import os

from unmasked.cli.common import Formatter
from unmasked.config import PretrainConfig, all_option_fields
from unmasked.console import print_knn, print_summary
from unmasked.data import image_folder
from unmasked.data.dataset import is_fashion_mnist
from unmasked.errors import UserError
from unmasked.eval import knn
from unmasked.objectives import registry
from unmasked.option_rules import add_pretrain_options
from unmasked.paths import refuse_out_inside_data
from unmasked.train import loop

EPILOG = """examples:
  unmasked pretrain --objective lut --data fashion-mnist --out runs/lut-fm
  unmasked pretrain --objective mae --data path/to/image_folder --model vit_small --img-size 224 \\
                    --patch-size 16 --batch-size 256 --epochs 100 --mask-ratio 0.75 --out runs/mae
  unmasked pretrain --out runs/lut-fm --resume        # continue where the last checkpoint left off
  unmasked pretrain --subset 512 --steps 20 --batch-size 64 --out runs/smoke   # quick smoke run

multi-GPU / multi-node (one process per GPU, PyTorch DDP):
  torchrun --nproc_per_node=8 -m unmasked pretrain ... --batch-size 4096
"""


def add_parser(sub) -> None:
    names = registry.names()
    p = sub.add_parser("pretrain", help=f"pretrain an encoder ({', '.join(names)})", formatter_class=Formatter,
                       description=f"Pretrain a ViT encoder with {' or '.join(names)}. "
                                   "Writes config.json, checkpoint.pt "
                                   "(atomically, every --save-every epochs and at the end), metrics.jsonl, "
                                   "encoder.safetensors (loads into timm) and summary.json into --out.",
                       epilog=EPILOG)
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out exactly where its last checkpoint left it")
    p.add_argument("--knn", action="store_true", help="evaluate with kNN when pretraining ends")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_pretrain_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    explicit = {f.name for f in all_option_fields() if hasattr(args, f.name)}
    cfg = PretrainConfig.flat(**{name: getattr(args, name) for name in explicit})
    refuse_out_inside_data(getattr(args, "out", None), getattr(args, "data", None), args.resume)
    if args.knn and not args.resume:
        _refuse_knn_without_labels(cfg)
    summary = loop.pretrain(cfg, resume=args.resume, explicit=explicit, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    print_summary(summary)
    if summary.get("interrupted_by"):
        print(f"interrupted by {summary['interrupted_by']}: checkpoint saved at step {summary['steps']}; "
              f"continue with: unmasked pretrain --out {summary['run_dir']} --resume")
        return 130 if summary["interrupted_by"] == "SIGINT" else 143
    if args.knn:
        print_knn(knn.run_knn(summary["run_dir"], progress=not args.no_progress))
    return 0


def _refuse_knn_without_labels(cfg: PretrainConfig) -> None:
    """--knn evaluates after training: on unlabeled data it would fail only then."""
    if cfg.data is None or is_fashion_mnist(cfg.data):
        return
    layout = "unlabeled" if cfg.unlabeled else image_folder._scan(cfg.data, False, 0.1, 0).layout
    if layout == "unlabeled":
        raise UserError(f"--knn: the kNN evaluation after pretraining needs labels, but --data {cfg.data} is "
                        "unlabeled" + (" (--unlabeled)" if cfg.unlabeled else " (no class folders / held-out "
                        "split)") + "; drop --knn, or use a labeled folder (root/<class>/... or "
                        "root/train/<class>/ + root/val/<class>/)")
