"""`unmasked study FILE [--dry-run | --report-only] [--results-dir DIR]`: the things a user does with a study."""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from pathlib import Path

from unmasked import provenance
from unmasked.errors import UserError
from unmasked.eval.view import eval_view_for
from unmasked.files import WRITE_ERRORS, atomic_write_text, read_json_or_none
from unmasked.sources import read_source
from unmasked.study.raw_pixels import FILE as RAW_FILE
from unmasked.study.raw_pixels import is_current, raw_pixel_knn
from unmasked.study.report import write_report
from unmasked.study.runner import dry_run, execute, is_finished
from unmasked.study.spec import is_encoder_run, load_study

HTML_LIMIT = 2_000_000  # bytes: a larger report.html (many inlined figures) stays out of the repository


class ReportNotSaved(Exception):
    """The runs are done but a report file could not be written (disk full, read-only folder); the
    command exits 1 with this one line."""


def ensure_raw_pixels(study) -> None:
    """Only for a study without a kNN evaluation (each kNN result file holds its raw-pixel row):
    computed once per study folder, on the evaluation view of the first finished run's data."""
    if "knn" in study.evals:
        return
    path = study.out / RAW_FILE
    if is_current(read_json_or_none(path)):
        return
    finished = [r for r in study.runs if is_finished(r)]
    done = next((r for r in finished if not is_encoder_run(r)), None) or next(iter(finished), None)
    if done is None:
        return
    print(f"[study {study.name}] raw-pixel kNN baseline", file=sys.stderr, flush=True)
    config = read_json_or_none(done.dir / "config.json") if not is_encoder_run(done) else _source_config(done)
    atomic_write_text(path, json.dumps(raw_pixel_knn(config), indent=1) + "\n")


def _source_config(run) -> dict:
    """What raw_pixel_knn reads from a config.json, for an arm that was not pretrained (its source.json)."""
    rec = read_source(run.dir)
    view = eval_view_for(rec["data"], rec["img_size"])
    return {"data": rec["data"], "img_size": rec["img_size"], "base_size": view.base_size,
            "in_chans": rec.get("in_chans") or (rec.get("spec") or {}).get("in_chans") or 3,
            "crop": "rrc" if view.crop_pct < 1 else "pad"}


def copy_results(study, result: dict, results_dir: str) -> Path:
    """<results_dir>/<study name>/: study.json (with provenance), report.md, the figures and, when
    small, report.html; text and PNG only, never a checkpoint or a feature cache."""
    dest = Path(results_dir) / study.name
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--results-dir {results_dir}: cannot create {dest} ({e.strerror})") from None
    for name in result["files"]:
        src = study.out / name
        if name == "report.html" and src.stat().st_size > HTML_LIMIT:
            continue
        if name.endswith((".md", ".json", ".png", ".html")) and src.is_file():
            shutil.copyfile(src, dest / name)
    return dest


def _not_saved(e: BaseException, folder) -> str:
    """'could not save FILE (reason)', naming the file the error names, else the folder."""
    reason = getattr(e, "strerror", None) or (str(e).splitlines() or [type(e).__name__])[0]
    return f"could not save {getattr(e, 'filename', None) or folder} ({reason})"


def run_study(file: str, out: str | None = None, dry: bool = False, report_only: bool = False,
              device: str | None = None, progress: bool = True, results_dir: str | None = None) -> dict:
    if dry and report_only:
        raise UserError("--dry-run and --report-only exclude each other: the first lists the runs, the second "
                        "writes the report from finished ones")
    if dry and results_dir:
        raise UserError("--results-dir with --dry-run: a dry run writes no report to copy")
    study = load_study(file, out)
    if dry:
        return dry_run(study)
    if not report_only:
        execute(study, device, progress)
        ensure_raw_pixels(study)
    elif not study.out.is_dir():
        raise UserError(f"--report-only: {study.out} does not exist; run `unmasked study {file}` first")
    command = "unmasked study " + shlex.join([file] + (["--out", out] if out else []))
    prov = provenance.record()
    try:
        result = write_report(study, command, prov)
    except WRITE_ERRORS as e:
        raise ReportNotSaved(f"{_not_saved(e, study.out)}; the earlier report in {study.out} (if any) is kept "
                             f"whole; free space and rerun `unmasked study {file} --report-only`") from None
    print(f"report written to {study.out}/report.md, report.html and study.json")
    if results_dir:
        try:
            dest = copy_results(study, result, results_dir)
        except WRITE_ERRORS as e:
            raise ReportNotSaved(f"--results-dir {results_dir}: {_not_saved(e, results_dir)}; the report in "
                                 f"{study.out} is written") from None
        print(f"results copied to {dest}/ (study.json, report.md, figures)")
    for d in result["differences"]:
        if d["metric"] in ("knn20_cls", "linear_cls"):
            print(f"  {d['sentence']}")
    if result["holm"]["family"]:
        print(f"  {result['holm']['sentence']}")
    for n in result["notes"]:
        print(f"  note: {n}")
    return result
