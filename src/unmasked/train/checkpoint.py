"""Checkpoints (written atomically, see files.py), RNG states and the encoder-only export."""

from __future__ import annotations

import json
import random
import re
import zipfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from unmasked.errors import UserError
from unmasked.files import atomic_write, atomic_write_text, read_json, require_keys

FORMAT = "unmasked-checkpoint/1"
CHECKPOINT = "checkpoint.pt"
ENCODER = "encoder.safetensors"
ENCODER_INFO = "encoder.json"


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def rng_state_for(state: dict, rank: int, world: int) -> dict:
    """The RNG state a process restores on resume: its own when the checkpoint holds one per
    process of the same count ("rng_ranks"; each process draws from its own CUDA generator, e.g.
    for drop path), else the saved one (rank 0's), with which a 1-process run resumes exactly."""
    ranks = state.get("rng_ranks")
    if ranks is not None and len(ranks) == world:
        return ranks[rank]
    return state["rng"]


def save_checkpoint(path: Path, state: dict) -> None:
    state = {"format": FORMAT, **state}
    atomic_write(Path(path), lambda tmp: torch.save(state, tmp))


def _load_error(path: Path, e: Exception) -> str:
    """Why torch.load failed, without its advice to retry with weights_only=False (which would run
    whatever code a damaged or foreign file carries)."""
    if not zipfile.is_zipfile(path):
        return "not a zip archive as torch.save writes: truncated, zero-filled or another kind of file"
    first = (str(e).splitlines() or [""])[0]
    kept = [s for s in re.split(r"(?<=\.) ", first) if "weights_only" not in s]
    return f"{type(e).__name__}: {' '.join(kept)[:300] or 'unreadable'}"


def load_checkpoint(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user-facing problem
        raise UserError(f"checkpoint {path} cannot be read ({_load_error(path, e)}); it is corrupt or not an "
                        "unmasked checkpoint") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path} is not an unmasked checkpoint "
                        f"(format {state.get('format') if isinstance(state, dict) else type(state).__name__!r})")
    return state


def export_encoder(encoder: torch.nn.Module, info: dict, run_dir: Path) -> Path:
    """encoder.safetensors (timm VisionTransformer state dict) + encoder.json (how to build it)."""
    run_dir = Path(run_dir)
    tensors = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    atomic_write(run_dir / ENCODER, lambda tmp: save_file(tensors, tmp, metadata={"format": "unmasked-encoder/1"}))
    atomic_write_text(run_dir / ENCODER_INFO, json.dumps(info, indent=2) + "\n")
    return run_dir / ENCODER


def load_encoder_file(path: Path) -> tuple[dict, dict]:
    """(state dict, info) from an export; info comes from the encoder.json beside it."""
    path = Path(path)
    info_path = path.with_name(ENCODER_INFO)
    if not info_path.is_file():
        raise UserError(f"{path}: missing {info_path.name} beside it (written by `unmasked pretrain`)")
    try:
        tensors = load_file(str(path))
    except Exception as e:  # noqa: BLE001
        raise UserError(f"{path} cannot be read as safetensors ({e})") from None
    info = require_keys(read_json(info_path, "it is written by `unmasked pretrain` beside the export"),
                        ("spec", "mean", "std", "data"), info_path)
    return tensors, info
