"""`unmasked study`: objectives x seeds x ablations from a TOML file -> one report."""

from __future__ import annotations

import argparse
import sys

from unmasked.cli.common import Formatter, settings_of
from unmasked.option_rules import add_settings
from unmasked.study import command
from unmasked.study.settings import StudySettings

EPILOG = ("examples:\n  unmasked study studies/fm-cpu.toml --dry-run\n"
          "  unmasked study studies/fm-cpu.toml\n"
          "  unmasked study studies/fm-cpu.toml --report-only\n"
          "  unmasked study studies/fm-cpu.toml --report-only --results-dir results\n"
          "  tensorboard --logdir runs/studies/fm-cpu   # with recipe tensorboard = true")


def add_parser(sub) -> None:
    st = sub.add_parser("study", help="objectives x seeds x ablations from a TOML file -> one report",
                        formatter_class=Formatter,
                        description="Runs every pretraining and evaluation a study file asks for as `unmasked` "
                                    "subprocesses (one run folder each, under the study folder), skips what is "
                                    "finished, resumes what is half done, then writes report.md, report.html and "
                                    "study.json: mean and std over seeds, paired differences with 95% intervals, "
                                    "attention distance and kNN-monitor curves. The study file's format is in "
                                    "the docstring of unmasked/study/spec.py; examples in studies/.",
                        epilog=EPILOG)
    st.add_argument("file", metavar="STUDY.toml", help="the study file")
    add_settings(st, "study")
    st.add_argument("--out", default=None, help="study folder (default: the file's out, else runs/studies/<name>)")
    st.add_argument("--results-dir", default=None, metavar="DIR",
                    help="also copy study.json, report.md and the figures (text and PNG, no checkpoints) to "
                         "DIR/<study name>/, with the commit, machine and torch version, for committing "
                         "(e.g. --results-dir results)")
    st.add_argument("--no-progress", action="store_true", help="no per-run progress bars")
    st.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_of(args, StudySettings)
    try:
        command.run_study(args.file, out=args.out, dry=settings.dry_run, report_only=settings.report_only,
                          device=settings.device, progress=not args.no_progress, results_dir=args.results_dir)
    except command.ReportNotSaved as e:
        print(f"unmasked: error: {e}", file=sys.stderr)
        return 1
    return 0
