"""`unmasked demo`: an objective on Fashion-MNIST, then kNN, sized to the device."""

from __future__ import annotations

import argparse
import textwrap

from unmasked import demo
from unmasked.cli.common import Formatter, settings_of
from unmasked.option_rules import add_settings


def add_parser(sub) -> None:
    d = sub.add_parser("demo",
                       help="an objective (default LUT) on Fashion-MNIST, then kNN, "
                            "with a summary (sized to the device)",
                       formatter_class=Formatter,
                       description=textwrap.fill(
                           "Pretrains a small ViT with --objective (default LUT) on Fashion-MNIST, evaluates it "
                           "with kNN beside the raw pixels and prints the kNN monitor's curve. On a CPU it trains "
                           "in fp32 (bf16 only pays on CPUs with AVX-512 BF16 or AMX, and the presets were "
                           "measured in fp32) within 15 minutes on 2 cores; measured alone on the project's 2-core "
                           f"machine: {demo.measured_times()}. On a GPU it trains the full ViT-Tiny/4 for 40 "
                           "epochs (bf16 autocast).", 100))
    add_settings(d, "demo")
    d.add_argument("--out", default="runs/demo",
                   help="run folder (default: runs/demo); an earlier demo's run files in it are replaced, "
                        "nothing else")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    d.add_argument("--transcript", default=None, metavar="DIR",
                   help="also write the printed summary (transcript.txt) and its numbers with the time, commit "
                        "and machine (demo.json) into DIR, for committing (e.g. results/demo-lut)")
    d.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_of(args, demo.DemoSettings)
    return demo.run_demo(args.out, device=settings.device, progress=not args.no_progress,
                         objective=settings.objective, transcript=args.transcript).get("exit_code", 0)
