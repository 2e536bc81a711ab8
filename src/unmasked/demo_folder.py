"""Which files in a demo's --out folder the demo may delete: only those it listed as it wrote them.

A demo writes a marker file, `.unmasked-demo`, into its folder; the marker holds the list of the
files the demo's own pretraining and kNN wrote (recorded after each stage and when the demo stops,
however it stops short of SIGKILL). Without the marker nothing is deleted. With it, a later demo
removes exactly the listed files (never the folder itself, never anything else) and refuses, naming
them, when anything unlisted is there: a user's notes, a figure of their own, the output of an
evaluation run by hand, or the files of a demo killed before it could list them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from unmasked.errors import UserError

MARKER = ".unmasked-demo"
LOCK_FILE = ".lock"  # held by the demo itself while it clears the folder: never removed
_NOTE = "written by `unmasked demo`; the next demo into this folder deletes the files listed here, nothing else"


def _walk(out: Path) -> tuple[list[str], list[str]]:
    """(files, other entries: symlinks, sockets, ...) under `out`, relative, symlinks not followed."""
    files, other = [], []
    for entry in sorted(out.iterdir()):
        rel = entry.name
        if entry.is_symlink():
            other.append(rel)
        elif entry.is_dir():
            sub_files, sub_other = _walk(entry)
            files += [f"{rel}/{f}" for f in sub_files]
            other += [f"{rel}/{f}" for f in sub_other]
        elif entry.is_file():
            files.append(rel)
        else:
            other.append(rel)
    return files, other


def listed_files(out: Path) -> set[str] | None:
    """The files the marker lists, or None for a marker without a list (a demo older than the list)."""
    try:
        record = json.loads((out / MARKER).read_text())
        files = record["files"]
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return {f for f in files if isinstance(f, str)} if isinstance(files, list) else None


def _write_marker(out: Path, files: list[str]) -> None:
    tmp = out / f"{MARKER}.{os.getpid()}.writing"
    tmp.write_text(json.dumps({"note": _NOTE, "files": files}, indent=1) + "\n")
    os.replace(tmp, out / MARKER)


def _foreign(out: Path, listed: set[str]) -> list[str]:
    files, other = _walk(out)
    return sorted(other + [f for f in files if f not in listed and f not in (MARKER, LOCK_FILE)])


def clear_previous_demo(out: Path) -> None:
    """Make `out` ready for a fresh demo run, deleting only the files an earlier demo listed."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"--out {out}: is a file, expected a folder for the demo run")
    if not any(e.name != LOCK_FILE for e in out.iterdir()):  # empty, or only the lock the demo holds
        return
    if not (out / MARKER).is_file():
        raise UserError(f"--out {out}: holds files that are not an earlier demo run (no {MARKER} marker); the "
                        "demo deletes only its own files, so choose another --out or empty that folder yourself")
    listed = listed_files(out)
    foreign = _foreign(out, listed or set())
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        why = (f"its {MARKER} lists no files (a demo of an earlier version, or one killed before it listed them)"
               if not listed else "it also holds files the demo did not write")
        raise UserError(f"--out {out}: an earlier demo run, but {why}: {shown}; the demo deletes only the files "
                        "it listed, so move these elsewhere, delete them yourself, or choose another --out")
    for rel in sorted(listed or (), key=lambda r: -r.count("/")):
        path = out / rel
        if path.is_file() and not path.is_symlink():
            path.unlink()
    for entry in sorted(out.rglob("*"), key=lambda p: -len(p.parts)):  # the demo's now empty subfolders
        if entry.is_dir() and not entry.is_symlink() and not any(entry.iterdir()):
            entry.rmdir()
    (out / MARKER).unlink()  # last: an interrupted clean-up still carries the marker and its list


def refuse_foreign_folder(out: Path) -> None:
    """Before anything is written into `out` (even a lock file): refuse a folder that is not a demo's."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, expected a folder for the demo run")
    if out.is_dir() and any(e.name != LOCK_FILE for e in out.iterdir()) and not (out / MARKER).is_file():
        raise UserError(f"--out {out}: holds files that are not an earlier demo run (no {MARKER} marker); the "
                        "demo deletes only its own files, so choose another --out or empty that folder yourself")


def mark_as_demo(out: Path) -> None:
    """A freshly cleared (or new) folder: the marker, listing nothing yet."""
    out.mkdir(parents=True, exist_ok=True)
    _write_marker(out, [])


def record_demo_files(out: Path) -> None:
    """List what is in the folder now as written by the demo: called after each of its stages, while
    the demo holds the folder's lock, in a folder that held nothing else when it was marked."""
    files, _ = _walk(out)
    _write_marker(out, sorted(f for f in files if f not in (MARKER, LOCK_FILE) and not f.endswith(".writing")))
