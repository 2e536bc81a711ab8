"""`unmasked eval knn|linear|finetune`: the three protocols on any encoder, beside raw pixels."""

from __future__ import annotations

import argparse

from unmasked.cli.common import Formatter, add_encoder_command, on_encoder, settings_of
from unmasked.console import print_finetune, print_knn, print_linear, warn_unsaved
from unmasked.errors import UserError
from unmasked.eval import finetune, knn, linear


def add_parser(sub) -> None:
    ev = sub.add_parser("eval", help="evaluate a pretrained encoder", formatter_class=Formatter)
    protocols = ev.add_subparsers(dest="protocol", metavar="PROTOCOL", required=True)
    _add_knn(protocols)
    _add_linear(protocols)
    _add_finetune(protocols)


def _add_knn(protocols) -> None:
    k = protocols.add_parser("knn", help="weighted kNN accuracy on the held-out split (DINO protocol)",
                             formatter_class=Formatter,
                             description="kNN top-1 (and top-5) of CLS and mean-pooled patch features: cosine "
                                         "similarity, k nearest training images vote with weight exp(sim / T). "
                                         "Writes <run>/knn.json.")
    add_encoder_command(k, "eval knn")
    k.set_defaults(func=lambda args: on_encoder(args, "eval knn", run_knn))


def _add_linear(protocols) -> None:
    lin = protocols.add_parser("linear", help="linear probe on frozen CLS and mean-pooled features (MAE protocol)",
                               formatter_class=Formatter,
                               description="Frozen features are extracted once and cached in <run>/features/; a "
                                           "BatchNorm1d(affine=False) + Linear head is trained with SGD or LARS "
                                           "(momentum 0.9, no weight decay, lr = base_lr * batch / 256, warm-up + "
                                           "cosine). The "
                                           "batch is the largest power of two up to 16384 giving >= 16 steps per "
                                           "epoch. Writes <run>/linear.json and the folded heads.")
    add_encoder_command(lin, "eval linear")
    lin.set_defaults(func=lambda args: on_encoder(args, "eval linear", run_linear))


def _add_finetune(protocols) -> None:
    ft = protocols.add_parser("finetune", help="full fine-tuning with layer-wise lr decay (MAE recipe)",
                              formatter_class=Formatter,
                              description="Fine-tunes the whole encoder with a global-average-pool head (its "
                                          "fc_norm trained): AdamW, layer-wise lr decay, drop path, mixup/cutmix, "
                                          "label smoothing, and for every encoder, whatever its pretraining crop, "
                                          "MAE's augmentation: RandomResizedCrop(0.08-1) of the whole image, timm "
                                          "RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25 ('pixel'). "
                                          "Reports the last epoch's "
                                          "held-out accuracy in <run>/finetune.json (and the best epoch's, "
                                          "labelled as chosen on the test split).")
    add_encoder_command(ft, "eval finetune")
    ft.set_defaults(func=lambda args: on_encoder(args, "eval finetune", run_finetune))


def run_knn(args: argparse.Namespace) -> int:
    protocol = settings_of(args, knn.KnnSettings)
    result = knn.run_knn(args.run, data=args.data, device=args.device, batch_size=args.batch_size, ks=protocol.k,
                         temperature=protocol.temperature, num_workers=args.num_workers,
                         progress=not args.no_progress, img_size=protocol.img_size)
    print_knn(result)
    return warn_unsaved(result)


def run_linear(args: argparse.Namespace) -> int:
    recipe = settings_of(args, linear.LinearRecipe)
    if recipe.warmup_epochs > recipe.epochs:
        raise UserError(f"--warmup-epochs {recipe.warmup_epochs}: must be in [0, --epochs {recipe.epochs}]")
    r = linear.run_linear(args.run, recipe, data=args.data, device=args.device, batch_size=args.batch_size,
                          num_workers=args.num_workers, progress=not args.no_progress)
    print_linear(r, recipe.optimizer)
    return warn_unsaved(r)


def run_finetune(args: argparse.Namespace) -> int:
    options = settings_of(args, finetune.FinetuneOptions)
    if options.train_batch is not None and options.train_batch % 2:
        raise UserError(f"--train-batch {options.train_batch}: mixup/cutmix need an even batch size")
    r = finetune.run_finetune(args.run, options, data=args.data, device=args.device, num_workers=args.num_workers,
                              progress=not args.no_progress)
    print_finetune(r)
    return warn_unsaved(r)
