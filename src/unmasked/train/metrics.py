"""Metrics as JSON lines, one object per logging step."""

import json
import math
from pathlib import Path

from unmasked.notes import warn


class JsonlWriter:
    def __init__(self, path: Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps(clean) + "\n")

    def truncate_after(self, step: int) -> None:
        """On resume: drop records past the checkpoint's step (they will be written again), and a
        line torn by a kill mid-write."""
        if not self.enabled or not self.path.exists():
            return
        kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines file; a line that does not parse (a write cut short by a kill or
    a full disk) is left out with a warning naming the file and the line."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for i, ln in enumerate(path.read_text().splitlines(), 1):
        if not ln.strip():
            continue
        try:
            records.append(json.loads(ln))
        except json.JSONDecodeError:
            warn(f"{path}: line {i} is not valid JSON (a write cut short?); left out")
    return records
