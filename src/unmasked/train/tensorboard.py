"""`--tensorboard`: every record written to metrics.jsonl also goes to TensorBoard event files.

The JSON lines stay the source of truth; the mirror adds scalars under <out>/tensorboard, one
tag per numeric field, at the record's optimiser step. A resumed run purges the events past
its checkpoint, as metrics.jsonl drops those lines.
"""

from __future__ import annotations

import math
from pathlib import Path

from unmasked.errors import UserError

LOG_DIR = "tensorboard"
NOT_SCALARS = {"step", "epoch"}


def tag(key: str) -> str:
    """Group related curves into TensorBoard sections."""
    if key.startswith("loss"):
        return f"loss/{key}"
    if key.startswith("knn"):
        return f"knn_monitor/{key}"
    if key in ("lr", "ema_momentum") or key.endswith("momentum"):
        return f"schedule/{key}"
    if key in ("images_per_s", "images_seen", "time_s"):
        return f"speed/{key}"
    return f"train/{key}"


class TensorBoardMirror:
    """Wraps a JsonlWriter: same interface, each write also becomes TensorBoard scalars."""

    def __init__(self, metrics, log_dir: Path, resume_step: int = 0):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("--tensorboard needs the tensorboard package, which is not installed: "
                            "pip install 'unmasked[tensorboard]' (or pip install tensorboard)") from None
        self.metrics = metrics
        self.writer = SummaryWriter(str(log_dir), purge_step=resume_step + 1 if resume_step else None)

    @property
    def path(self) -> Path:
        return self.metrics.path

    def write(self, record: dict) -> None:
        self.metrics.write(record)
        step = int(record.get("step", 0))
        for key, value in record.items():
            if key in NOT_SCALARS or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                self.writer.add_scalar(tag(key), value, step)
        self.writer.flush()  # a killed run keeps what it logged

    def truncate_after(self, step: int) -> None:
        self.metrics.truncate_after(step)

    def close(self) -> None:
        self.writer.close()


def mirror_to_tensorboard(metrics, run_dir: Path, resume_step: int, enabled: bool):
    if not enabled or not metrics.enabled:
        return metrics
    return TensorBoardMirror(metrics, Path(run_dir) / LOG_DIR, resume_step)
