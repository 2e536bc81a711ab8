"""The one place where evaluations write into a run folder.

Every result file, head and fine-tuned model an evaluation stores goes through `save_in_run`, so
that a run-folder lock can wrap these writes in one spot, and so that a failed write (read-only
folder, disk full) costs only the file: the computed numbers are still returned and printed,
with a note saying what could not be saved.
"""

from __future__ import annotations

import json
from pathlib import Path

from unmasked.files import WRITE_ERRORS, atomic_write


def save_in_run(run_dir: Path, name: str, write_fn) -> str | None:
    """Write run_dir/name atomically via write_fn(temp path); None, or why it could not be saved."""
    path = Path(run_dir) / name
    try:
        atomic_write(path, write_fn)
    except WRITE_ERRORS as e:
        return write_problem(path, e)
    return None


def write_problem(path, e: BaseException) -> str:
    """'could not save PATH (reason)' in one line (the error itself may name a temp file)."""
    reason = getattr(e, "strerror", None) or (str(e).splitlines() or [type(e).__name__])[0]
    return f"could not save {path} ({reason})"


def save_result(run_dir: Path, name: str, result: dict) -> dict:
    """Store a result as JSON; a failure is recorded in result["not_saved"] (not in the file)."""
    text = json.dumps(result, indent=2) + "\n"

    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    problem = save_in_run(run_dir, name, write)
    if problem:
        result.setdefault("not_saved", []).append(problem)
    return result
