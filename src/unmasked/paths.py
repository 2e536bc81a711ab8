"""Paths recorded in a run are absolute, so that it can be resumed and evaluated from any folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

from unmasked.data import fashion_mnist
from unmasked.errors import UserError


def absolute_data(data: str) -> str:
    """--data as a run records it: a folder as an absolute path, a dataset name as it is."""
    if data.lower().replace("_", "-") in (fashion_mnist.NAME, "fmnist"):
        return data
    return os.path.abspath(os.path.expanduser(data))


def record_absolute_paths(cfg):
    """--data, --init-from and --weights made absolute; what the user typed is kept for display (data_as_typed)."""
    if cfg.data_as_typed is None:
        cfg.data_as_typed = cfg.data
    cfg.data = absolute_data(cfg.data)
    if cfg.init_from:
        cfg.init_from = absolute_source(cfg.init_from)
    if getattr(cfg, "weights", None):
        cfg.weights = os.path.abspath(os.path.expanduser(cfg.weights))
    return cfg


def absolute_source(source: str) -> str:
    """An encoder source with its path made absolute: a run folder or file, local-dir:PATH,
    random:RUN_FOLDER; timm:, hf-hub: and random:PRESET names as they are."""
    for prefix in ("local-dir:", "random:"):
        if source.startswith(prefix):
            body = source[len(prefix):]
            if prefix == "random:" and not os.path.isdir(os.path.expanduser(body)):
                return source  # random:PRESET[/PATCH]
            return prefix + os.path.abspath(os.path.expanduser(body))
    if source.startswith(("timm:", "hf-hub:")):
        return source
    return os.path.abspath(os.path.expanduser(source))


def refuse_out_inside_data(out: str | None, data: str | None, resume: bool = False) -> None:
    """A run folder inside its image folder would be read as training images by the next run (its
    figures), and would change the data a resumed run checks against: refused before anything is
    written."""
    if out is None:
        return
    if data is None and resume:  # the run's own data
        try:
            data = json.loads((Path(out) / "config.json").read_text()).get("data")
        except (OSError, ValueError, AttributeError):
            data = None
    if not data or not os.path.isdir(os.path.expanduser(data)):
        return
    d, o = Path(data).expanduser().resolve(), Path(out).expanduser().resolve()
    if o == d or d in o.parents:
        raise UserError(f"--out {out} is inside --data {data}: the run's figures and checkpoints would be read "
                        "as images of the data set; choose an --out folder outside it (run folders already "
                        "inside an image folder are left out of its scan)")
