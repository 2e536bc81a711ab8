"""What a run was trained on, so that a resume after the data folder changed is refused.

Images added to or removed from the folder change the steps per epoch, so the lr and momentum
schedules would stretch or shrink without a word. The checkpoint keeps the number of training
images and a hash of their file names; a resume compares them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from unmasked.data.dataset import ImageData
from unmasked.errors import UserError


def data_fingerprint(data: ImageData) -> dict:
    h = hashlib.blake2b(digest_size=16)
    root = Path(data.name)
    for f in data.train_files or []:
        h.update(f"{f.relative_to(root) if f.is_relative_to(root) else f}\n".encode())
    return {"train_images": len(data.train), "train_files": len(data.train_files or []), "names": h.hexdigest()}


def check_same_data(saved: dict | None, now: dict, run_dir: Path) -> None:
    """Refuse a resume whose training data (`now`, a data_fingerprint) differs from the checkpoint's
    record (older checkpoints have none)."""
    if not saved or now == saved:
        return
    before, after = saved["train_files"] or saved["train_images"], now["train_files"] or now["train_images"]
    if after != before:
        change = f"{after:,} training images now, {before:,} when the run started ({after - before:+,})"
    else:
        change = f"the same number of training images ({after:,}) but different file names"
    raise UserError(f"--resume: the training data of {run_dir} changed: {change}. Resuming would silently change "
                    f"the steps per epoch and stretch the schedule; restore the data, or start a new run "
                    f"(--init-from {run_dir} starts from this run's encoder)")
