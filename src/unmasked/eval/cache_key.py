"""Content keys for the feature cache: what the images, labels, weights and transform *are*.

A key built from paths and counts reused stale features (and labels) after a folder's images were
replaced. These keys change when any decoded pixel or label changes (images in memory), when a
streamed file's size or mtime changes, when any encoder weight changes, and when the evaluation
transform changes, so a mismatch recomputes instead of reusing old numbers.
"""

from __future__ import annotations

import hashlib
import json

import torch

from unmasked.data.dataset import Split


def _digest() -> hashlib.blake2b:
    return hashlib.blake2b(digest_size=16)  # about 1 GB/s: cheap beside extracting the features


def _update_tensor(h, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy())


def split_fingerprint(split: Split) -> str:
    """Decoded pixels (in memory) or file list with sizes and mtimes (streamed), plus the labels."""
    h = _digest()
    if split.in_memory:
        _update_tensor(h, split.images)
    else:
        for f in split.files:
            try:
                st = f.stat()
                h.update(f"{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{f}\0missing\n".encode())
    if split.labels is not None:
        _update_tensor(h, split.labels)
    return h.hexdigest()


def weights_fingerprint(module: torch.nn.Module) -> str:
    h = _digest()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        _update_tensor(h, t)
    return h.hexdigest()


def feature_cache_key(split_name: str, split: Split, encoder: torch.nn.Module, transform: dict) -> str:
    blob = json.dumps({"split": split_name, "data": split_fingerprint(split), "weights": weights_fingerprint(encoder),
                       "transform": transform}, sort_keys=True)
    return hashlib.blake2b(blob.encode(), digest_size=8).hexdigest()
