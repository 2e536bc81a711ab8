"""Open what `unmasked pretrain` wrote: a run folder, a checkpoint.pt or an encoder export.

`runs.load_encoder` is the entry point for any encoder (these, and the sources of sources.py);
a source of the form random:RUN_FOLDER opens its run here, below both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from unmasked.build import build_objective
from unmasked.config import PretrainConfig
from unmasked.errors import UserError
from unmasked.files import read_json
from unmasked.models.vit import EncoderSpec, ViTEncoder
from unmasked.objectives import registry
from unmasked.train import checkpoint as ckpt


@dataclass
class LoadedEncoder:
    encoder: ViTEncoder  # or any timm VisionTransformer (a public encoder), with .spec set
    spec: EncoderSpec
    mean: list[float]
    std: list[float]
    crop_pct: float
    data: str
    objective: str
    run_dir: Path  # where evaluation results are written
    config: PretrainConfig | None  # present when loaded from a run folder or checkpoint
    source: Path
    eval_size: int | None = None  # evaluate at another input size (positions interpolated); None: spec's
    source_info: dict | None = None  # a public or random encoder: name, weights and sha256, normalisation


def _from_checkpoint(path: Path) -> LoadedEncoder:
    state = ckpt.load_checkpoint(path)
    cfg = PretrainConfig.from_dict(state["config"])
    spec = EncoderSpec(**state["encoder_spec"])
    enc = ViTEncoder(spec)
    prefix = export_prefix(cfg)
    sd = {k[len(prefix):]: v for k, v in state["objective"].items() if k.startswith(prefix)}
    _load(enc, sd, path)
    return LoadedEncoder(enc, spec, cfg.mean, cfg.std, cfg.crop_pct, cfg.data, cfg.objective, path.parent, cfg, path)


def export_prefix(cfg: PretrainConfig) -> str:
    """Where the objective's exported encoder sits in its state dict ("student.encoder." for MAE and
    LUT); found by building the objective on the meta device, which allocates no memory."""
    try:
        with torch.device("meta"):
            obj = build_objective(cfg)
        target = obj.export_encoder()
        name = next(n for n, m in obj.named_modules() if m is target)
        return name + "."
    except Exception:  # noqa: BLE001 - an objective that cannot be built on meta: the usual place
        return "student.encoder."


def config_from_file(path: Path) -> PretrainConfig:
    """A run's config.json; an objective this version does not register is named with the file
    (not as an `--objective` the user never typed)."""
    data = read_json(path)
    name = data.get("objective") if isinstance(data, dict) else None
    if isinstance(name, str) and name not in registry.names():
        raise UserError(f"{path}: names the objective {name!r}, which this version does not register (it has "
                        f"{', '.join(registry.names())}); the run was made by another version or the file was "
                        "edited")
    return PretrainConfig.from_dict(data)


def _from_export(path: Path) -> LoadedEncoder:
    tensors, info = ckpt.load_encoder_file(path)
    try:
        spec = EncoderSpec(**info["spec"])
    except TypeError as e:
        raise UserError(f"{path.with_name(ckpt.ENCODER_INFO)}: its spec does not describe an encoder ({e})") from None
    enc = ViTEncoder(spec)
    _load(enc, tensors, path)
    cfg_path = path.parent / "config.json"
    cfg = config_from_file(cfg_path) if cfg_path.is_file() else None
    return LoadedEncoder(enc, spec, info["mean"], info["std"], info.get("crop_pct", 1.0), info["data"],
                         info.get("objective", "?"), path.parent, cfg, path)


def _load(enc: ViTEncoder, sd: dict, path: Path) -> None:
    try:
        enc.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise UserError(f"{path}: weights do not fit the encoder described beside them: {e}") from None


def open_run(path: Path, prefer: str = "checkpoint") -> LoadedEncoder:
    """A run folder (its checkpoint.pt, else encoder.safetensors; `prefer="export"` the other way
    round), a .pt or a .safetensors."""
    path = Path(path)
    if path.is_dir():
        candidates = [path / ckpt.CHECKPOINT, path / ckpt.ENCODER]
        if prefer != "checkpoint":
            candidates.reverse()
        for c in candidates:
            if c.is_file():
                return open_run(c)
        raise UserError(f"{path}: not a run folder (no {ckpt.CHECKPOINT} or {ckpt.ENCODER} in it)")
    if path.suffix == ".safetensors":
        return _from_export(path)
    return _from_checkpoint(path)


def load_run_objective(path: str | Path, device: torch.device):
    """The full objective (encoder, decoder, heads) of a run, for reconstructions."""
    path = Path(path)
    file = path / ckpt.CHECKPOINT if path.is_dir() else path
    state = ckpt.load_checkpoint(file)
    cfg = PretrainConfig.from_dict(state["config"])
    obj = build_objective(cfg)
    obj.load_state_dict(state["objective"])
    return obj.to(device).eval(), cfg


def run_reconstructs(checkpoint: str | Path) -> bool:
    """Whether the run's objective can draw reconstructions (a registry capability), read from the
    config.json beside the checkpoint (or the checkpoint itself)."""
    checkpoint = Path(checkpoint)
    cfg_file = checkpoint.parent / "config.json"
    try:
        objective = json.loads(cfg_file.read_text())["objective"]
    except (OSError, ValueError, KeyError):
        objective = ckpt.load_checkpoint(checkpoint)["config"]["objective"]
    return objective in registry.names() and registry.get(objective).objective.reconstructs()
