"""`unmasked study`'s settings: what it does with a study file (list, run, or report only) and on
which device. A module of its own, below unmasked.option_rules, which the study's file checks
read and which collects every command's settings."""

from __future__ import annotations

from dataclasses import dataclass

from unmasked.options import DEVICE, FLAG, opt


@dataclass
class StudySettings:
    dry_run: bool = opt(False, "list the runs, their budgets and the estimated time", rule=FLAG)
    report_only: bool = opt(False, "rebuild the report from what is finished; runs and computes nothing",
                            rule=FLAG)
    device: str | None = opt(None, "device for every run and evaluation (default: the recipe's)",
                             rule=DEVICE)
