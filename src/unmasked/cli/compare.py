"""`unmasked compare`: several runs side by side in one report (Markdown + HTML)."""

from __future__ import annotations

import argparse

from unmasked.analysis import report
from unmasked.cli.common import Formatter, refuse_a_file_as_folder
from unmasked.console import warn_unsaved


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="one report with several runs side by side (Markdown + HTML)",
                       formatter_class=Formatter,
                       description="Table of each run's objective, model, images seen, time and accuracies; "
                                   "attention distance, NMI and spectra of all runs on shared plots; attention "
                                   "maps and reconstructions side by side. Missing kNN, linear probe and "
                                   "analyses are computed first (unless --no-compute); fine-tuning is named "
                                   "with the command that computes it.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--no-compute", action="store_true", help="only report what is already computed")
    p.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda' (default: auto)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    refuse_a_file_as_folder(args.out, "--out")
    r = report.compare(args.runs, args.out, compute=not args.no_compute, device=args.device,
                       progress=not args.no_progress)
    print(f"report written to {args.out}/report.md and {args.out}/report.html ({len(r['files'])} files)")
    for n in r["notes"]:
        print(f"  note: {n}")
    return warn_unsaved(r)
