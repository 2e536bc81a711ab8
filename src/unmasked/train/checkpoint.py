"""Checkpoints written atomically (temp file, fsync, rename) and the encoder-only export."""

from __future__ import annotations

import json
import os
import random
import re
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from unmasked.errors import UserError
from unmasked.notes import warn
from unmasked.train.write_errors import as_os_error

FORMAT = "unmasked-checkpoint/1"
CHECKPOINT = "checkpoint.pt"
ENCODER = "encoder.safetensors"
ENCODER_INFO = "encoder.json"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write_fn) -> None:
    """Write via `write_fn(file_path)` into a temp file beside `path`, then rename over it.

    A crash at any point leaves either the old file or the new one, never a partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write_fn(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files private (0600); give the usual mode
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as e:
        as_os = as_os_error(e, path, Path(tmp))  # before the temp file goes: it may name the reason
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if as_os is not None:
            raise as_os from e
        raise


# atomic_write's temp names: "." + file name + "." + mkstemp's 8 random characters + ".tmp"
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the temp files of writes that never finished (the writer was SIGKILLed: no handler ran).

    Only call this while holding the folder's run lock: then no live process is writing them.
    """
    folder = Path(folder)
    try:
        stale = [p for p in folder.iterdir() if _TEMP_NAME.match(p.name) and p.is_file()]
    except OSError:
        return []
    removed, size = [], 0
    for p in stale:
        try:
            n = p.stat().st_size
            p.unlink()
        except OSError:
            continue
        removed.append(p)
        size += n
    if removed:
        warn(f"{folder}: removed {len(removed)} temp file(s) ({size / 1e6:.1f} MB) left by an "
             f"interrupted write: {', '.join(p.name for p in removed)}")
    return removed


def atomic_write_text(path: Path, text: str) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    atomic_write(path, write)


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
        raise UserError(f"{path} is not an unmasked checkpoint (format {state.get('format') if isinstance(state, dict) else type(state).__name__!r})")
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
    from unmasked.side_files import read_json, require_keys

    info = require_keys(read_json(info_path, "it is written by `unmasked pretrain` beside the export"),
                        ("spec", "mean", "std", "data"), info_path)
    return tensors, info
