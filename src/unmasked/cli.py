"""The `unmasked` command line: pretrain, eval knn, demo."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from dataclasses import MISSING

from unmasked import __version__
from unmasked.config import OPTION_FIELDS, PretrainConfig
from unmasked.errors import TrainingStopped, UserError

GROUP_TITLES = {
    "objective": "objective",
    "data": "data and augmentation",
    "model": "model",
    "training": "optimisation",
    "performance": "speed and memory",
    "run": "run control",
}

EPILOG_PRETRAIN = """examples:
  unmasked pretrain --objective lut --data fashion-mnist --out runs/lut-fm
  unmasked pretrain --objective mae --data path/to/image_folder --model vit_small --img-size 224 \\
                    --patch-size 16 --batch-size 256 --epochs 100 --mask-ratio 0.75 --out runs/mae
  unmasked pretrain --out runs/lut-fm --resume        # continue where the last checkpoint left off
  unmasked pretrain --subset 512 --steps 20 --batch-size 64 --out runs/smoke   # quick smoke run

multi-GPU / multi-node (one process per GPU, PyTorch DDP):
  torchrun --nproc_per_node=8 -m unmasked pretrain ... --batch-size 4096
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog):
        super().__init__(prog, max_help_position=34, width=100)


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    groups = {k: parser.add_argument_group(v) for k, v in GROUP_TITLES.items()}
    for f in OPTION_FIELDS:
        meta = f.metadata
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        help_text = meta["help"]
        if default is not None and not isinstance(default, bool):
            help_text += f" (default: {default})"
        kwargs = dict(dest=f.name, default=argparse.SUPPRESS, help=help_text)
        if isinstance(default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
            kwargs["help"] = help_text + f" (default: {'on' if default else 'off'})"
        else:
            kwargs["type"] = _field_type(f)
            if meta.get("choices"):
                kwargs["choices"] = meta["choices"]
            if meta.get("metavar"):
                kwargs["metavar"] = meta["metavar"]
        groups[meta["group"]].add_argument(flag, **kwargs)


def _field_type(f):
    t = str(f.type)
    if "int" in t:
        return int
    if "float" in t:
        return float
    return str


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unmasked",
        description="Pretrain Vision Transformer encoders with masked image modeling (MAE, LUT) and measure "
                    "what they learned.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"unmasked {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("pretrain", help="pretrain an encoder (MAE or LUT)", formatter_class=_Formatter,
                       description="Pretrain a ViT encoder with MAE or LUT. Writes config.json, checkpoint.pt "
                                   "(atomically, every --save-every epochs and at the end), metrics.jsonl, "
                                   "encoder.safetensors (loads into timm) and summary.json into --out.",
                       epilog=EPILOG_PRETRAIN)
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out exactly where its last checkpoint left it")
    p.add_argument("--knn", action="store_true", help="evaluate with kNN when pretraining ends")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_config_options(p)

    ev = sub.add_parser("eval", help="evaluate a pretrained encoder", formatter_class=_Formatter)
    ev_sub = ev.add_subparsers(dest="protocol", metavar="PROTOCOL")
    k = ev_sub.add_parser("knn", help="weighted kNN accuracy on the held-out split (DINO protocol)",
                          formatter_class=_Formatter,
                          description="kNN top-1 (and top-5) of CLS and mean-pooled patch features: cosine "
                                      "similarity, k nearest training images vote with weight exp(sim / T). "
                                      "Writes <run>/knn.json.")
    _add_eval_common(k)
    k.add_argument("--k", type=int, nargs="+", default=[10, 20, 100, 200], metavar="K",
                   help="neighbour counts (default: 10 20 100 200; k = 20 is the headline)")
    k.add_argument("--temperature", type=float, default=0.07, help="vote temperature T (default: 0.07)")

    d = sub.add_parser("demo", help="LUT on Fashion-MNIST, then kNN, with a summary (sized to the device)",
                       formatter_class=_Formatter,
                       description="Pretrains a small ViT with LUT on Fashion-MNIST and evaluates it with kNN. "
                                   "On a CPU it fits in about 10 minutes on 2 cores; on a GPU it trains a "
                                   "larger model for longer.")
    d.add_argument("--out", default="runs/demo", help="run folder (default: runs/demo); replaced if it exists")
    d.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda' (default: auto)")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def _add_eval_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="run folder, checkpoint.pt or encoder.safetensors")
    p.add_argument("--data", default=None, help="evaluate on this dataset instead of the run's own")
    p.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N' (default: auto)")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default: 256)")
    p.add_argument("--num-workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="decoding workers for image folders")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _print_knn(result: dict) -> None:
    print(f"kNN on {result['data']} ({result['train_images']:,} train -> {result['test_images']:,} "
          f"{result['test_split']} images, T = {result['temperature']})")
    ks = result["ks"]
    print("  feature  " + "".join(f"  k={k:<6}" for k in ks))
    for kind, label in (("cls", "CLS"), ("mean", "mean-pool")):
        row = result["results"][kind]
        print(f"  {label:<9}" + "".join(f"  {row[str(k)]['top1']:6.2f}%" for k in ks))
    print("  (top-1 accuracy; top-5 and all values in knn.json)")


def cmd_pretrain(args: argparse.Namespace) -> int:
    from unmasked.train.loop import pretrain

    explicit = {f.name for f in OPTION_FIELDS if hasattr(args, f.name)}
    cfg = PretrainConfig(**{name: getattr(args, name) for name in explicit})
    summary = pretrain(cfg, resume=args.resume, explicit=explicit, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    print_summary(summary)
    if summary.get("interrupted_by"):
        print(f"interrupted by {summary['interrupted_by']}: checkpoint saved at step {summary['steps']}; "
              f"continue with: unmasked pretrain --out {summary['run_dir']} --resume")
        return 130 if summary["interrupted_by"] == "SIGINT" else 143
    if args.knn:
        from unmasked.eval.knn import run_knn

        _print_knn(run_knn(summary["run_dir"], progress=not args.no_progress))
    return 0


def print_summary(s: dict, knn: dict | None = None) -> None:
    state = "done" if s["completed"] else f"stopped at step {s['steps']} of {s['total_steps']}"
    print(f"pretraining {state}")
    rows = [
        ("objective", s["objective"]),
        ("model", s["model"]),
        ("data", f"{s['data']} ({s['train_images']:,} training images)"),
        ("device", f"{s['device']}, {s['precision']}" + (f", {s['world_size']} processes" if s["world_size"] > 1 else "")),
        ("images seen", f"{s['images_seen']:,} ({s['epochs']} epochs, {s['steps']} steps)"),
        ("time", f"{s['time_s']:.0f} s ({s['images_per_s']:.0f} images/s)"),
    ]
    if knn is not None:
        rows.append((f"kNN top-1 (k={knn['headline_k']})",
                     f"CLS {knn['top1']['cls']:.2f}%, mean-pooled {knn['top1']['mean']:.2f}% "
                     f"({knn['test_images']:,} {knn['test_split']} images)"))
    rows.append(("run folder", s["run_dir"]))
    for k, v in rows:
        print(f"  {k:<18} {v}")


def cmd_eval(args: argparse.Namespace) -> int:
    if args.protocol == "knn":
        from unmasked.eval.knn import run_knn

        if any(k < 1 for k in args.k):
            raise UserError(f"--k {' '.join(map(str, args.k))}: every k must be a positive integer")
        if args.temperature <= 0:
            raise UserError(f"--temperature {args.temperature}: must be positive")
        if args.batch_size < 1:
            raise UserError(f"--batch-size {args.batch_size}: must be a positive integer")
        result = run_knn(args.run, data=args.data, device=args.device, batch_size=args.batch_size, ks=args.k,
                         temperature=args.temperature, num_workers=args.num_workers, progress=not args.no_progress)
        _print_knn(result)
        return 0
    raise UserError("eval needs a protocol: unmasked eval knn RUN")


def cmd_demo(args: argparse.Namespace) -> int:
    from unmasked.demo import run_demo

    run_demo(args.out, device=args.device, progress=not args.no_progress)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    warnings.simplefilter("default")
    try:
        if args.command == "pretrain":
            return cmd_pretrain(args)
        if args.command == "eval":
            if args.protocol is None:
                parser.parse_args(["eval", "--help"])
            return cmd_eval(args)
        if args.command == "demo":
            return cmd_demo(args)
    except UserError as e:
        print(f"unmasked: error: {e}", file=sys.stderr)
        return 2
    except TrainingStopped as e:
        print(f"unmasked: training stopped: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("unmasked: interrupted", file=sys.stderr)
        return 130
    return 0
