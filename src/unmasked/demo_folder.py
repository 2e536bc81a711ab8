"""Which files in a demo's --out folder the demo may delete: only those it can prove it wrote.

An earlier demo leaves a marker file; without it nothing is deleted. With it, only the files a
run and its evaluations write are removed (never the folder itself, never anything else), so a
user's notes beside a demo run, or a working directory passed as `--out .`, are never touched.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

from unmasked.errors import UserError

MARKER = ".unmasked-demo"
# What `pretrain`, `eval knn` (and the other evaluations a user may run on a demo) write.
RUN_FILES = {
    MARKER, "config.json", "checkpoint.pt", "metrics.jsonl", "summary.json", "encoder.safetensors",
    "encoder.json", "knn.json", "linear.json", "linear_heads.safetensors", "finetune.json",
    "finetuned.safetensors", "compute.json",
}
# Temp files of interrupted atomic writes (".checkpoint.pt.x1y2.tmp") and the run lock.
RUN_PATTERNS = (".*.tmp", ".lock", "*.lock", "knn-*.json", "linear-*.json", "linear_heads-*.safetensors")
LOCK_FILE = ".lock"  # held by the demo itself while it clears the folder: never removed
RUN_SUBFOLDERS = {"features": ("train-*.pt", "heldout-*.pt", ".*.tmp"),
                  "analysis": ("*.json", "*.png", ".*.tmp"), "tensorboard": ("events.out.tfevents.*",)}


def _is_run_file(path: Path) -> bool:
    return path.is_file() and (path.name in RUN_FILES or any(fnmatch.fnmatch(path.name, p) for p in RUN_PATTERNS))


def _foreign(out: Path) -> list[str]:
    """Entries of `out` that a demo did not write (relative names)."""
    foreign = []
    for entry in sorted(out.iterdir()):
        if entry.name in RUN_SUBFOLDERS and entry.is_dir() and not entry.is_symlink():
            patterns = RUN_SUBFOLDERS[entry.name]
            foreign += [f"{entry.name}/{f.name}" for f in sorted(entry.iterdir())
                        if not (f.is_file() and any(fnmatch.fnmatch(f.name, p) for p in patterns))]
        elif entry.is_symlink() or not _is_run_file(entry):
            foreign.append(entry.name)
    return foreign


def clear_previous_demo(out: Path) -> None:
    """Make `out` ready for a fresh demo run, deleting only an earlier demo's own files."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"--out {out}: is a file, expected a folder for the demo run")
    if not any(e.name != LOCK_FILE for e in out.iterdir()):  # empty, or only the lock the demo holds
        return
    if not (out / MARKER).is_file():
        raise UserError(f"--out {out}: holds files that are not an earlier demo run (no {MARKER} marker); the "
                        "demo deletes only its own files, so choose another --out or empty that folder yourself")
    foreign = _foreign(out)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise UserError(f"--out {out}: an earlier demo run, but it also holds files the demo did not write "
                        f"({shown}); move them elsewhere or choose another --out")
    for entry in out.iterdir():
        if entry.is_dir():
            for f in entry.iterdir():
                f.unlink()
            entry.rmdir()
        elif entry.name not in (MARKER, LOCK_FILE):
            entry.unlink()
    (out / MARKER).unlink()  # last: an interrupted clean-up still carries the marker


def refuse_foreign_folder(out: Path) -> None:
    """Before anything is written into `out` (even a lock file): refuse a folder that is not a demo's."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, expected a folder for the demo run")
    if out.is_dir() and any(e.name != LOCK_FILE for e in out.iterdir()) and not (out / MARKER).is_file():
        raise UserError(f"--out {out}: holds files that are not an earlier demo run (no {MARKER} marker); the "
                        "demo deletes only its own files, so choose another --out or empty that folder yourself")


def mark_as_demo(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by `unmasked demo`; the next demo into this folder replaces its run files\n")
