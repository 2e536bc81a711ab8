"""Paths recorded in a run are absolute, so that it can be resumed and evaluated from any folder."""

from __future__ import annotations

import os

from unmasked.data import fashion_mnist


def absolute_data(data: str) -> str:
    """--data as a run records it: a folder as an absolute path, a dataset name as it is."""
    if data.lower().replace("_", "-") in (fashion_mnist.NAME, "fmnist"):
        return data
    return os.path.abspath(os.path.expanduser(data))


def record_absolute_paths(cfg):
    """--data and --init-from made absolute; what the user typed is kept for display (data_as_typed)."""
    if cfg.data_as_typed is None:
        cfg.data_as_typed = cfg.data
    cfg.data = absolute_data(cfg.data)
    if cfg.init_from:
        cfg.init_from = os.path.abspath(os.path.expanduser(cfg.init_from))
    return cfg
