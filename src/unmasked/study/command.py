"""`unmasked study FILE [--dry-run | --report-only]`: the three things a user does with a study."""

from __future__ import annotations

import json
import shlex
import sys

from unmasked.errors import UserError
from unmasked.study.raw_pixels import FILE as RAW_FILE
from unmasked.study.raw_pixels import raw_pixel_knn
from unmasked.study.report import write_report
from unmasked.study.runner import dry_run, execute, is_finished, read_json
from unmasked.study.spec import is_encoder_run, load_study
from unmasked.train.checkpoint import atomic_write_text


def ensure_raw_pixels(study) -> None:
    """Computed once per study folder, from the first finished run's data and input size."""
    path = study.out / RAW_FILE
    if path.is_file():
        return
    finished = [r for r in study.runs if is_finished(r)]
    done = next((r for r in finished if not is_encoder_run(r)), None) or next(iter(finished), None)
    if done is None:
        return
    print(f"[study {study.name}] raw-pixel kNN baseline", file=sys.stderr, flush=True)
    config = read_json(done.dir / "config.json") if not is_encoder_run(done) else _source_config(done)
    atomic_write_text(path, json.dumps(raw_pixel_knn(config), indent=1) + "\n")


def _source_config(run) -> dict:
    """What raw_pixel_knn reads from a config.json, for an arm that was not pretrained (its source.json)."""
    from unmasked.eval.view import eval_view_for
    from unmasked.sources import read_source

    rec = read_source(run.dir)
    view = eval_view_for(rec["data"], rec["img_size"])
    return {"data": rec["data"], "img_size": rec["img_size"], "base_size": view.base_size,
            "in_chans": rec.get("in_chans") or (rec.get("spec") or {}).get("in_chans") or 3,
            "crop": "rrc" if view.crop_pct < 1 else "pad"}


def run_study(file: str, out: str | None = None, dry: bool = False, report_only: bool = False,
              device: str | None = None, progress: bool = True) -> dict:
    if dry and report_only:
        raise UserError("--dry-run and --report-only exclude each other: the first lists the runs, the second "
                        "writes the report from finished ones")
    study = load_study(file, out)
    if dry:
        return dry_run(study)
    if not report_only:
        execute(study, device, progress)
        ensure_raw_pixels(study)
    elif not study.out.is_dir():
        raise UserError(f"--report-only: {study.out} does not exist; run `unmasked study {file}` first")
    command = "unmasked study " + shlex.join([file] + (["--out", out] if out else []))
    result = write_report(study, command)
    print(f"report written to {study.out}/report.md, report.html and study.json")
    for d in result["differences"]:
        if d["metric"] in ("knn20_cls", "linear_cls"):
            print(f"  {d['sentence']}")
    for n in result["notes"]:
        print(f"  note: {n}")
    return result
