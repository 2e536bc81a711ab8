"""`unmasked compare`: several runs side by side in one report (Markdown + HTML)."""

from __future__ import annotations

import argparse

from unmasked.analysis import report
from unmasked.cli.common import Formatter, refuse_a_file_as_folder, settings_of
from unmasked.console import warn_unsaved
from unmasked.option_rules import add_settings


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
    add_settings(p, "compare")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    refuse_a_file_as_folder(args.out, "--out")
    settings = settings_of(args, report.CompareSettings)
    r = report.compare(args.runs, args.out, compute=not settings.no_compute, device=settings.device,
                       progress=not args.no_progress)
    print(f"report written to {args.out}/report.md and {args.out}/report.html ({len(r['files'])} files)")
    for n in r["notes"]:
        print(f"  note: {n}")
    return warn_unsaved(r)
