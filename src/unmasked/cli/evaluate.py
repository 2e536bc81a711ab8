"""`unmasked eval knn|linear|finetune`: the three protocols on any encoder, beside raw pixels."""

from __future__ import annotations

import argparse

from unmasked.cli.common import (
    EVAL_SIZE_HELP,
    Formatter,
    add_eval_common,
    add_source_out,
    on_encoder,
)
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
    add_eval_common(k)
    add_source_out(k)
    k.add_argument("--k", type=int, nargs="+", default=[10, 20, 100, 200], metavar="K",
                   help="neighbour counts (default: 10 20 100 200; k = 20 is the headline)")
    k.add_argument("--temperature", type=float, default=0.07, help="vote temperature T (default: 0.07)")
    k.add_argument("--img-size", type=int, default=None, metavar="PX", help=EVAL_SIZE_HELP)
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
    add_eval_common(lin)
    add_source_out(lin)
    lin.add_argument("--epochs", type=int, default=90, help="probe epochs (default: 90)")
    lin.add_argument("--warmup-epochs", type=int, default=10, help="warm-up epochs (default: 10)")
    lin.add_argument("--optimizer", choices=["sgd", "lars"], default="sgd",
                     help="sgd: momentum SGD (default); lars: MAE's LARS (trust coefficient 0.001), whose steps "
                          "suit ImageNet-sized datasets but under-train small ones")
    lin.add_argument("--base-lr", type=float, default=0.1, help="base lr, scaled by batch / 256 (default: 0.1)")
    lin.add_argument("--probe-batch", type=int, default=None, help="probe batch size (default: sized to the data)")
    lin.add_argument("--img-size", type=int, default=None, metavar="PX", help=EVAL_SIZE_HELP)
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
    add_eval_common(ft)
    add_source_out(ft)
    ft.add_argument("--epochs", type=int, default=None,
                    help="epochs (default: 30 on Fashion-MNIST, else MAE's 100 for ViT-B and smaller, 50 for L, H)")
    ft.add_argument("--warmup-epochs", type=int, default=None, help="warm-up epochs (default: 5)")
    ft.add_argument("--lr-rule", choices=("mae", "lut"), default=None,
                    help="mae (default): MAE's recipe, lr = base_lr * batch / 256 with base lr 5e-4 (ViT-B) or "
                         "1e-3 (L, H) and layer decay 0.65 (B) or 0.75; lut: LUT's own rule, lr = base_lr * "
                         "sqrt(batch) / 8 with base lr 1e-3 and layer decay 0.75")
    ft.add_argument("--base-lr", type=float, default=None,
                    help="base lr, scaled as --lr-rule says (default: by size and rule, see --lr-rule)")
    ft.add_argument("--layer-decay", type=float, default=None,
                    help="layer-wise lr decay (default: by size and rule, see --lr-rule)")
    ft.add_argument("--drop-path", type=float, default=None,
                    help="stochastic depth (default by size, as MAE: ViT-B 0.1, L 0.2, H 0.3; smaller 0.1)")
    ft.add_argument("--mixup", type=float, default=None, help="mixup alpha (default: 0.8; 0 = off)")
    ft.add_argument("--cutmix", type=float, default=None, help="cutmix alpha (default: 1.0; 0 = off)")
    ft.add_argument("--label-smoothing", type=float, default=None, help="label smoothing (default: 0.1)")
    ft.add_argument("--randaug-magnitude", type=int, default=None,
                    help="timm RandAugment 'rand-m<M>-mstd0.5-inc1' magnitude (default: 9)")
    ft.add_argument("--train-batch", type=int, default=None, help="training batch size (default: 256)")
    ft.add_argument("--subset", type=int, default=None, metavar="N", help="fine-tune on N training images")
    ft.add_argument("--steps", type=int, default=None, metavar="N", help="stop after N steps (smoke tests)")
    ft.set_defaults(func=lambda args: on_encoder(args, "eval finetune", run_finetune))


def run_knn(args: argparse.Namespace) -> int:
    if any(k < 1 for k in args.k):
        raise UserError(f"--k {' '.join(map(str, args.k))}: every k must be a positive integer")
    if args.temperature <= 0:
        raise UserError(f"--temperature {args.temperature}: must be positive")
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be a positive integer")
    result = knn.run_knn(args.run, data=args.data, device=args.device, batch_size=args.batch_size, ks=args.k,
                         temperature=args.temperature, num_workers=args.num_workers, progress=not args.no_progress,
                         img_size=args.img_size)
    print_knn(result)
    return warn_unsaved(result)


def run_linear(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be a positive integer")
    for name in ("epochs", "probe_batch"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise UserError(f"--{name.replace('_', '-')} {v}: must be a positive integer")
    if args.warmup_epochs < 0 or args.warmup_epochs > args.epochs:
        raise UserError(f"--warmup-epochs {args.warmup_epochs}: must be in [0, --epochs {args.epochs}]")
    r = linear.run_linear(args.run, data=args.data, device=args.device, batch_size=args.batch_size,
                          epochs=args.epochs, warmup_epochs=args.warmup_epochs, base_lr=args.base_lr,
                          probe_batch=args.probe_batch, num_workers=args.num_workers,
                          progress=not args.no_progress, optimizer=args.optimizer, img_size=args.img_size)
    print_linear(r, args.optimizer)
    return warn_unsaved(r)


def run_finetune(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be a positive integer")
    for name in ("epochs", "train_batch", "subset", "steps"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise UserError(f"--{name.replace('_', '-')} {v}: must be a positive integer")
    if args.train_batch is not None and args.train_batch % 2:
        raise UserError(f"--train-batch {args.train_batch}: mixup/cutmix need an even batch size")
    r = finetune.run_finetune(args.run, data=args.data, device=args.device, num_workers=args.num_workers,
                              progress=not args.no_progress, subset=args.subset, epochs=args.epochs,
                              warmup_epochs=args.warmup_epochs, base_lr=args.base_lr,
                              layer_decay=args.layer_decay, drop_path=args.drop_path, mixup=args.mixup,
                              cutmix=args.cutmix, label_smoothing=args.label_smoothing,
                              randaug_magnitude=args.randaug_magnitude, batch_size=args.train_batch,
                              steps=args.steps, lr_rule=args.lr_rule)
    print_finetune(r)
    return warn_unsaved(r)
