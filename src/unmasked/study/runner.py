"""Run what a study is missing: each pretraining and evaluation is an `unmasked` subprocess.

The run folders are exactly what the same commands typed by hand would give, so a killed study
leaves each run resumable with `unmasked pretrain --out RUN --resume`. A rerun skips finished
runs (summary.json says completed, or reached the study's --steps) and finished evaluations
(their JSON file, newer than the checkpoint), resumes half runs, and refuses a run folder whose
config.json no longer matches the study file, naming the field.
"""

from __future__ import annotations

import ctypes
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from unmasked.config import all_option_fields
from unmasked.console import fmt_duration
from unmasked.errors import UserError
from unmasked.eval.common import result_name
from unmasked.eval.knn import protocol_variant
from unmasked.eval.linear import recipe_variant
from unmasked.files import read_json_or_none
from unmasked.option_rules import settings_parser
from unmasked.sources import SOURCE_FILE, prepare
from unmasked.study.budget import run_budget
from unmasked.study.resolved import expected_config
from unmasked.study.spec import Run, Study, is_encoder_run
from unmasked.train.loop import RESUME_IGNORED, RESUME_OVERRIDABLE
from unmasked.train.warm_start import ADOPTED_OPTIONS

RESULT_FILES = {"knn": "knn.json", "linear": "linear.json", "analyze": "analysis/analysis.json",
                "finetune": "finetune.json"}
EVAL_COMMANDS = {"knn": ["eval", "knn"], "linear": ["eval", "linear"], "analyze": ["analyze"],
                 "finetune": ["eval", "finetune"]}


def _resume_free() -> set[str]:
    """Options a run may change when resumed (they do not change what is trained)."""
    return set(RESUME_OVERRIDABLE) | set(RESUME_IGNORED)


# -- state of one run -----------------------------------------------------------------------
def _origin(run: Run) -> Path:
    """The file every evaluation must be newer than: the checkpoint, or a source's source.json."""
    return run.dir / (SOURCE_FILE if is_encoder_run(run) else "checkpoint.pt")


def is_finished(run: Run) -> bool:
    if is_encoder_run(run):
        return _origin(run).is_file()
    s = read_json_or_none(run.dir / "summary.json")
    if not s or not (run.dir / "checkpoint.pt").is_file():
        return False
    return bool(s.get("completed")) or (run.options.get("steps") is not None
                                        and s.get("steps", 0) >= run.options["steps"])


def result_file(proto: str, extra: list[str] | tuple = (), config: dict | None = None) -> str:
    """The file an evaluation writes with the study's options, named by the same function the
    evaluation uses: kNN and linear-probe variants (other k, T, probe recipe, --img-size, --data) go
    to their own file, never knn.json / linear.json. `config` is the run's config.json (its input
    size and data decide whether --img-size / --data make a variant); without it, the study's
    recipe is assumed to hold them."""
    if proto not in ("knn", "linear"):
        return RESULT_FILES[proto]
    args = settings_parser(" ".join(EVAL_COMMANDS[proto])).parse_args(list(extra))
    config = config or {}
    run_data = config.get("data") or args.data or ""
    data = args.data or run_data
    size = [] if args.img_size is None or args.img_size == config.get("img_size") else [f"img{args.img_size}"]
    if proto == "knn":
        parts = protocol_variant(tuple(sorted(set(args.k))), args.temperature, None) + size
        return result_name("knn", parts, data, run_data)
    parts = recipe_variant(epochs=args.epochs, warmup_epochs=args.warmup_epochs, base_lr=args.base_lr,
                           probe_batch=args.probe_batch, optimizer=args.optimizer) + size
    return result_name("linear", parts, data, run_data)


def run_result_file(run: Run, proto: str, extra: list[str] | tuple = ()) -> str:
    """result_file for one run: its config.json once it exists, else the options the study gives it."""
    cfg = read_json_or_none(run.dir / "config.json") or {k: run.options.get(k) for k in ("data", "img_size")}
    return result_file(proto, extra, cfg)


def eval_done(run: Run, proto: str, extra: list[str] | tuple = ()) -> bool:
    result, ckpt = run.dir / run_result_file(run, proto, extra), _origin(run)
    return result.is_file() and ckpt.is_file() and result.stat().st_mtime >= ckpt.stat().st_mtime


def run_state(run: Run) -> str:
    if is_finished(run):
        return "done"
    if (run.dir / "checkpoint.pt").is_file():
        s = read_json_or_none(run.dir / "summary.json") or {}
        return f"half (step {s['steps']})" if "steps" in s else "half"
    return "new"


def _same(a, b, name: str) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
        except (TypeError, ValueError):
            return False
    if a == b:
        return True
    if name in ("data", "init_from") and isinstance(a, str) and isinstance(b, str):
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()  # relative vs absolute
    return False


def config_mismatches(run: Run) -> list[str]:
    """Fields where the run's config.json differs from what the study asks for now."""
    saved = read_json_or_none(run.dir / "config.json")
    if saved is not None and not isinstance(saved, dict):
        raise UserError(f"{run.dir / 'config.json'}: not a run config (expected a JSON object, found "
                        f"{type(saved).__name__}); restore it or move the run folder away")
    if saved is None:
        return []
    free = _resume_free()
    expected = expected_config(run.options)
    out = []
    for f in all_option_fields():
        name = f.name
        if name in free or name not in saved:
            continue
        if name in ADOPTED_OPTIONS and name not in run.options and saved.get("init_record"):
            continue  # a warm start took it from its source, not from the default
        if name in run.options:
            want = run.options[name]
        elif expected is not None and expected.has_option(name) and expected.option(name) is not None:
            want = expected.option(name)
        else:
            continue  # resolved while the run starts (channels, statistics): nothing to compare
        if not _same(saved[name], want, name):
            typed = "" if name in run.options else " (the default, not set in the study)"
            out.append(f"{name} = {want!r}{typed} in the study, {saved[name]!r} in {run.dir / 'config.json'}")
    return out


def check_configs(study: Study) -> None:
    bad = [(r, m) for r in study.runs for m in config_mismatches(r)]
    if bad:
        lines = "; ".join(f"run {r.name}: {m}" for r, m in bad[:5])
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise UserError(f"study file {study.path} no longer matches runs made from it: {lines}{more}. Restore the "
                        f"field(s) in the study file, or give the changed study another out folder (--out) so "
                        f"its runs start afresh")


# -- subprocesses -------------------------------------------------------------------------------
def _die_with_parent() -> None:
    """Linux: a child gets SIGTERM (pretrain saves a checkpoint) when the study process dies."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: a killed study may leave its current child running
        pass


def run_command(argv: list[str], what: str) -> None:
    cmd = [sys.executable, "-m", "unmasked", *argv]
    proc = subprocess.run(cmd, preexec_fn=_die_with_parent if os.name == "posix" else None)
    if proc.returncode in (130, 143, -signal.SIGINT, -signal.SIGTERM):
        raise KeyboardInterrupt
    if proc.returncode != 0:
        raise UserError(f"{what} failed (exit code {proc.returncode}); its message is above. The command was: "
                        f"unmasked {' '.join(argv)}")


class Progress:
    """One line per step of the study: runs done / total, elapsed, and an estimate of the rest."""

    def __init__(self, study: Study, budgets: dict[str, dict]):
        self.study, self.budgets, self.t0 = study, budgets, time.perf_counter()
        self.planned_done = 0.0  # the estimate of the work finished in this invocation

    def line(self, done: int, run: Run, what: str) -> None:
        elapsed = time.perf_counter() - self.t0
        left = sum(_estimate(self.budgets[r.name], r, self.study) for r in self.study.runs[done:])
        if self.planned_done > 0 and elapsed > 30:  # measured pace of this invocation
            left *= elapsed / self.planned_done
        print(f"[study {self.study.name}] {done}/{len(self.study.runs)} runs done, elapsed {fmt_duration(elapsed)}, "
              f"about {fmt_duration(left)} left -- {run.name}: {what}", file=sys.stderr, flush=True)


def _estimate(b: dict, run: Run, study: Study) -> float:
    if is_finished(run):
        return 0.0 if all(eval_done(run, p, x) for p, x in study.evals.items()) else (b["evals_s"] or 0)
    return (b["pretrain_s"] or 0) + (b["evals_s"] or 0)


def execute(study: Study, device: str | None, progress: bool) -> None:
    check_configs(study)
    budgets = {r.name: _budget(r, study) for r in study.runs}
    bar = Progress(study, budgets)
    study.out.mkdir(parents=True, exist_ok=True)
    quiet = [] if progress else ["--no-progress"]
    dev = device or study.recipe.get("device")
    for i, run in enumerate(study.runs):
        b = budgets[run.name]
        if is_encoder_run(run) and not is_finished(run):
            bar.line(i, run, f"preparing {run.options['encoder']} (not pretrained)")
            prepare(run.options["encoder"], run.dir, run.options["data"], run.options.get("weights"),
                    run.options.get("img_size"), run.seed)
        elif not is_finished(run):
            resume = (run.dir / "checkpoint.pt").is_file()
            bar.line(i, run, "resuming pretraining" if resume else "pretraining")
            argv = ["pretrain", "--out", str(run.dir), *quiet]
            if resume:  # the saved config wins; only what may change on resume is passed again
                free = _resume_free()
                argv += ["--resume", *_argv_for(run, {k for k in run.options if k in free})]
            else:
                argv += run.argv
            if device:
                argv += ["--device", device]
            run_command(argv, f"pretraining of {run.name}")
            if not is_finished(run):
                raise UserError(f"pretraining of {run.name} ended without finishing ({run.dir / 'summary.json'})")
        bar.planned_done += b["pretrain_s"] or 0
        for proto, extra in study.evals.items():
            if eval_done(run, proto, extra):
                continue
            bar.line(i, run, f"{' '.join(EVAL_COMMANDS[proto])}")
            argv = [*EVAL_COMMANDS[proto], str(run.dir), *extra, *quiet]
            if dev:
                argv += ["--device", dev]
            run_command(argv, f"{' '.join(EVAL_COMMANDS[proto])} of {run.name}")
        bar.planned_done += b["evals_s"] or 0
    print(f"[study {study.name}] {len(study.runs)}/{len(study.runs)} runs done, elapsed "
          f"{fmt_duration(time.perf_counter() - bar.t0)}", file=sys.stderr, flush=True)


def _budget(run: Run, study: Study) -> dict:
    if is_encoder_run(run):  # no pretraining; its evaluations are not estimated
        return {"train_images": None, "epochs": 0, "batch_size": None, "steps": 0, "images_seen": 0,
                "pretrain_s": 0.0, "evals_s": None}
    return run_budget(run.options, study.evals)


def _argv_for(run: Run, keys: set[str]) -> list[str]:
    """The run's own arguments for just these options (argv pairs kept in order)."""
    out, i, argv = [], 0, run.argv
    flags = {"--" + k.replace("_", "-") for k in keys} | {"--no-" + k.replace("_", "-") for k in keys}
    while i < len(argv):
        takes_value = i + 1 < len(argv) and not argv[i + 1].startswith("--")
        if argv[i] in flags:
            out += argv[i : i + 2] if takes_value else argv[i : i + 1]
        i += 2 if takes_value else 1
    return out


# -- dry run ------------------------------------------------------------------------------------
def dry_run(study: Study) -> dict:
    rows, total = [], 0.0
    for run in study.runs:
        b = _budget(run, study)
        state = ("done" if is_finished(run) else "new") if is_encoder_run(run) else run_state(run)
        est = 0.0 if state == "done" else (b["pretrain_s"] or 0) + (b["evals_s"] or 0)
        total += est
        rows.append((run.name, run.options.get("objective") or "(none)", b, state, est))
    print(f"study {study.name} ({study.path}): {len(study.runs)} runs = {len(study.arms)} arm(s) x "
          f"{len(study.points)} grid point(s) x {len(study.seeds)} seed(s), in {study.out}")
    print(f"evaluations per run: {', '.join(study.evals) or 'none'}")
    print(f"  {'run':<40} {'objective':<10} {'epochs':>6} {'steps':>7} {'images seen':>12} {'state':<16} estimate")
    for name, obj, b, state, est in rows:
        seen = f"{b['images_seen']:,}" if b["images_seen"] is not None else "?"
        print(f"  {name:<40} {obj:<10} {b['epochs']:>6} {b['steps'] or '?':>7} {seen:>12} {state:<16} "
              f"{fmt_duration(est)}")
    for m in study.matches:  # epochs the study file did not type: say where they come from
        where = "".join(f", {k}={v}" for k, v in m.point.items())
        print(f"  {m.arm}{where}: {m.why()}")
    print(f"estimated time left: {fmt_duration(total)} on 2 CPU cores (a rough estimate anchored on the demo "
          "model's measured times; a GPU is much faster)")
    return {"runs": len(rows), "estimate_s": total}
