"""Run what a study is missing: each pretraining and evaluation is an `unmasked` subprocess.

The run folders are exactly what the same commands typed by hand would give, so a killed study
leaves each run resumable with `unmasked pretrain --out RUN --resume`. A rerun skips finished
runs (summary.json says completed, or reached the study's --steps) and finished evaluations
(their JSON file, newer than the checkpoint), resumes half runs, and refuses a run folder whose
config.json no longer matches the study file, naming the field.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from unmasked.config import PretrainConfig, all_option_fields, resolve_defaults
from unmasked.data.dataset import is_fashion_mnist
from unmasked.errors import UserError
from unmasked.study.budget import fmt_duration, run_budget
from unmasked.study.spec import Run, Study

RESULT_FILES = {"knn": "knn.json", "linear": "linear.json", "analyze": "analysis/analysis.json",
                "finetune": "finetune.json"}
EVAL_COMMANDS = {"knn": ["eval", "knn"], "linear": ["eval", "linear"], "analyze": ["analyze"],
                 "finetune": ["eval", "finetune"]}


def _resume_free() -> set[str]:
    """Options a run may change when resumed (they do not change what is trained)."""
    try:
        from unmasked.train.loop import RESUME_IGNORED, RESUME_OVERRIDABLE

        return set(RESUME_OVERRIDABLE) | set(RESUME_IGNORED)
    except ImportError:  # the loop moved: fall back to the options that never change the weights
        return {"out", "steps", "num_workers", "device", "log_every", "save_every", "save_every_steps",
                "knn_every", "tensorboard", "init_from"}


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# -- state of one run -----------------------------------------------------------------------
def is_finished(run: Run) -> bool:
    s = read_json(run.dir / "summary.json")
    if not s or not (run.dir / "checkpoint.pt").is_file():
        return False
    return bool(s.get("completed")) or (run.options.get("steps") is not None and s.get("steps", 0) >= run.options["steps"])


def result_file(proto: str, extra: list[str] | tuple = ()) -> str:
    """The file an evaluation writes with the study's options: kNN and linear-probe variants (other k,
    T or probe recipe) go to their own file, never knn.json / linear.json."""
    if proto not in ("knn", "linear"):
        return RESULT_FILES[proto]
    from unmasked.cli import build_parser

    args = build_parser().parse_args([*EVAL_COMMANDS[proto], "RUN", *extra])
    if proto == "knn":
        from unmasked.eval.knn import result_file as knn_file

        return knn_file(args.k, args.temperature)
    from unmasked.eval.linear import result_file as linear_file

    return linear_file(epochs=args.epochs, warmup_epochs=args.warmup_epochs, base_lr=args.base_lr,
                       probe_batch=args.probe_batch, optimizer=args.optimizer)


def eval_done(run: Run, proto: str, extra: list[str] | tuple = ()) -> bool:
    result, ckpt = run.dir / result_file(proto, extra), run.dir / "checkpoint.pt"
    return result.is_file() and ckpt.is_file() and result.stat().st_mtime >= ckpt.stat().st_mtime


def run_state(run: Run) -> str:
    if is_finished(run):
        return "done"
    if (run.dir / "checkpoint.pt").is_file():
        s = read_json(run.dir / "summary.json") or {}
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


def _expected_config(run: Run):
    """What `unmasked pretrain` resolves the run's options to on Fashion-MNIST (objectives fill some
    shared defaults, e.g. DINOv2's weight decay), or None on image folders, where defaults depend on
    the images and only the study's explicit options pin a value."""
    known = {f.name for f in all_option_fields()}
    cfg = PretrainConfig.flat(**{k: v for k, v in run.options.items() if k in known})
    if not is_fashion_mnist(cfg.data):
        return None
    return resolve_defaults(cfg, True)


def config_mismatches(run: Run) -> list[str]:
    """Fields where the run's config.json differs from what the study asks for now."""
    saved = read_json(run.dir / "config.json")
    if saved is None:
        return []
    free = _resume_free()
    expected = _expected_config(run)
    out = []
    for f in all_option_fields():
        name = f.name
        if name in free or name not in saved:
            continue
        if name in run.options:
            want = run.options[name]
        elif expected is not None and expected.has_option(name) and expected.option(name) is not None:
            want = expected.option(name)
        else:
            continue  # resolved from the data: only an explicit value pins it
        if not _same(saved[name], want, name):
            out.append(f"{name} = {want!r} in the study, {saved[name]!r} in {run.dir / 'config.json'}")
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
        import ctypes

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
    budgets = {r.name: run_budget(r.options, study.evals) for r in study.runs}
    bar = Progress(study, budgets)
    study.out.mkdir(parents=True, exist_ok=True)
    quiet = [] if progress else ["--no-progress"]
    dev = device or study.recipe.get("device")
    for i, run in enumerate(study.runs):
        b = budgets[run.name]
        if not is_finished(run):
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
        b = run_budget(run.options, study.evals)
        state = run_state(run)
        est = 0.0 if state == "done" else (b["pretrain_s"] or 0) + (b["evals_s"] or 0)
        total += est
        rows.append((run.name, run.options["objective"], b, state, est))
    print(f"study {study.name} ({study.path}): {len(study.runs)} runs = {len(study.arms)} arm(s) x "
          f"{len(study.points)} grid point(s) x {len(study.seeds)} seed(s), in {study.out}")
    print(f"evaluations per run: {', '.join(study.evals) or 'none'}")
    print(f"  {'run':<40} {'objective':<10} {'epochs':>6} {'steps':>7} {'images seen':>12} {'state':<16} estimate")
    for name, obj, b, state, est in rows:
        seen = f"{b['images_seen']:,}" if b["images_seen"] is not None else "?"
        print(f"  {name:<40} {obj:<10} {b['epochs']:>6} {b['steps'] or '?':>7} {seen:>12} {state:<16} "
              f"{fmt_duration(est)}")
    print(f"estimated time left: {fmt_duration(total)} on 2 CPU cores (a rough estimate anchored on the demo "
          "model's measured times; a GPU is much faster)")
    return {"runs": len(rows), "estimate_s": total}
