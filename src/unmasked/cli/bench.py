"""`unmasked bench`: time the training step on synthetic data (images/s, TFLOP/s, memory)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from unmasked import bench
from unmasked.cli.common import Formatter, refuse_unwritable_file, settings_of
from unmasked.config import all_option_fields
from unmasked.errors import UserError
from unmasked.option_rules import add_pretrain_options, add_settings

# pretrain's options that have no meaning for a step on synthetic data (`--steps` is bench's own)
NOT_BENCH_OPTIONS = frozenset({
    "data", "out", "init_from", "weights", "subset", "cache_gb", "num_workers", "strict", "max_image_pixels",
    "unlabeled",
    "save_every", "save_every_steps", "log_every", "steps", "nan", "knn_every", "tensorboard", "memory_check",
    "on_collapse",
})

EPILOG = ("examples:\n  unmasked bench --objective lut --model vit_base --batch-size 128\n"
          "  unmasked bench --objective mae --model vit_tiny --img-size 28 --patch-size 4 "
          "--channels 1 --batch-size 512 --compile --compile-mode reduce-overhead\n"
          "  unmasked bench --objective dinov2 --model vit_tiny --width 128 --depth 6 --heads 4 "
          "--img-size 28 --patch-size 7 --channels 1 --batch-size 256 --dino-local-crops 4  "
          "# the CPU demo's model\n"
          "  unmasked bench --compare-plain ...     # plain fp32 path vs optimised, one run\n"
          "  unmasked bench --compare-reference ... # the published code's step vs optimised\n"
          "  unmasked bench --compare-precision ... # fp32 vs bf16 autocast, one run")


def add_parser(sub) -> None:
    """`unmasked bench`: pretrain's options (less those of data and run control) and its own."""
    b = sub.add_parser("bench", help="time the training step on synthetic data (images/s, TFLOP/s, memory)",
                       formatter_class=Formatter,
                       description="Times one full training step (forward, loss, backward, AdamW and the EMA "
                                   "update), the training loop's own, on synthetic input already on the device, "
                                   "after warm-up. It takes pretrain's model, objective and optimisation options "
                                   "(not given: ViT-B/16 at 224 px, 3 channels, batch 128; the rest as pretrain "
                                   "resolves them). FLOPs are counted with torch.utils.flop_counter. Runs on a "
                                   "CPU too (and says so).",
                       epilog=EPILOG)
    bo = b.add_argument_group("benchmark")
    add_settings(bo, "bench", skip=frozenset({"path"}))  # set by the switches of _add_paths
    _add_paths(bo)
    bo.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")
    add_pretrain_options(b, skip=NOT_BENCH_OPTIONS)
    b.set_defaults(func=run)


def _add_paths(bo) -> None:
    paths = bo.add_mutually_exclusive_group()
    paths.add_argument("--plain", dest="path", action="store_const", const="plain", default="optimised",
                       help="time only the plain path (fp32, separate views, explicit attention, per-tensor "
                            "AdamW/EMA): the exactness reference")
    paths.add_argument("--reference", dest="path", action="store_const", const="reference",
                       help="time only the published code's step with a current timm (fp16 autocast + GradScaler "
                            "on CUDA, gradient norm, separate views, SDPA, default AdamW, per-parameter EMA)")
    paths.add_argument("--compare-plain", dest="baseline", action="store_const", const="plain", default=None,
                       help="time the plain and the optimised path in one process, steps interleaved, and print "
                            "both with their ratio (median step each; each path's peak memory is taken while "
                            "the other model is not resident)")
    paths.add_argument("--compare-reference", dest="baseline", action="store_const", const="reference",
                       help="as --compare-plain, with the reference path as the baseline: the side-by-side form "
                            "of the speed targets (docs/speed.md)")
    paths.add_argument("--compare-eager", dest="baseline", action="store_const", const="eager",
                       help="with --compile: the optimised path without compile beside the compiled one (what "
                            "compile and CUDA graphs add)")


def _refuse_clashes(args: argparse.Namespace) -> None:
    if args.profile and (args.baseline or args.compare_precision):
        raise UserError("--profile profiles one path: drop --compare-plain/--compare-reference/--compare-eager/"
                        "--compare-precision")
    compiled = getattr(args, "compile", False)
    if args.baseline == "eager" and not compiled:
        raise UserError("--compare-eager sets the eager step beside the compiled one: add --compile")
    if compiled and args.path != "optimised":
        raise UserError("--compile applies to the optimised path; --plain and --reference time the eager "
                        "baselines (use --compare-plain/--compare-reference --compile to set one beside it)")
    if args.json:  # checked before the benchmark runs, not after
        refuse_unwritable_file(args.json, "--json")


def run(args: argparse.Namespace) -> int:
    _refuse_clashes(args)
    typed = {f.name for f in all_option_fields() if hasattr(args, f.name)} - NOT_BENCH_OPTIONS
    cfg = bench.bench_config(**{name: getattr(args, name) for name in typed})
    options = settings_of(args, bench.BenchOptions)
    paired = args.baseline or args.compare_precision
    results = bench.bench_pair(cfg, options, baseline=args.baseline) if paired else [bench.bench(cfg, options)]
    for r in results:
        print(bench.format_result(r))
    if results[0]["device_type"] == "cpu":
        print("note: measured on a CPU; GPU anchors and targets (docs) are not comparable with these figures; "
              "peak memory is measured on CUDA only")
    if len(results) == 2:
        print(bench.pair_line(results, args.steps))
    if args.json:
        try:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        except OSError as e:
            raise UserError(f"--json {args.json}: could not write the results ({e.strerror or e}); they are "
                            "printed above") from None
    return 0

