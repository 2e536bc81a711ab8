"""Encoder sources other than run folders: public timm / Hugging Face ViTs, official checkpoints, and
randomly initialised baselines.

A source is named by one string:

- `timm:NAME` - `timm.create_model(NAME, pretrained=True, num_classes=0)`; with `--weights FILE` (an
  official .pth, a .safetensors, a timm file) the weights come from FILE, offline, through timm's own
  checkpoint filter (which converts the official MAE, DINO and DINOv2 layouts);
- `hf-hub:ORG/NAME`, `local-dir:PATH` - timm's own model names for a Hub repository or a folder with
  config.json and model.safetensors;
- `random:PRESET[/PATCH]` (e.g. `random:vit_tiny/4`; PRESET may be WIDTHxDEPTHxHEADS, e.g.
  `random:128x6x4/7`) - our encoder, randomly initialised from a seed,
  the baseline that says what pretraining added; input size and channels from the data unless given;
  `random:RUN_FOLDER` takes a run's exact shape and normalisation instead.

Evaluations write into a results folder (`--out DIR`). It holds source.json, which names the source,
its weights file and sha256, input size and normalisation, so that `load_encoder(DIR)`, `compare DIR`
and a study read it as they read a run folder.

Third-party files never execute code: safetensors, or `torch.load(weights_only=True)` (plus
argparse.Namespace, which official training checkpoints carry); a pickle that needs other objects
is refused.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import re
from dataclasses import replace
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file
from timm.models import get_pretrained_cfg
from timm.models.vision_transformer import VisionTransformer

from unmasked.data.dataset import channel_stats, is_fashion_mnist, load_data
from unmasked.errors import UserError
from unmasked.eval.view import eval_view_for
from unmasked.files import atomic_write_text
from unmasked.models.vit import PRESETS, EncoderSpec, ViTEncoder, encoder_spec
from unmasked.run_folder import LoadedEncoder, open_run

SOURCE_FILE = "source.json"
PREFIXES = ("timm:", "hf-hub:", "local-dir:", "random:")


def is_source(text) -> bool:
    return isinstance(text, str) and text.startswith(PREFIXES)


def read_source(folder) -> dict | None:
    """The source.json of a results folder, or None for anything else."""
    f = Path(folder) / SOURCE_FILE
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{f}: not readable as JSON ({e})") from None


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


# -- weights files ----------------------------------------------------------------------


def read_weights(path: Path) -> dict:
    """A state dict from a .safetensors or a tensors-only pickle; never runs code from the file."""
    if not path.is_file():
        raise UserError(f"--weights {path}: no such file")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as e:  # noqa: BLE001 - a damaged or foreign file: one line
            raise UserError(f"--weights {path}: not a readable .safetensors file ({e})") from None
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"--weights {path}: refused: this pickle needs arbitrary Python objects, and loading "
                        f"it could execute code ({first[:160]}); pass a .safetensors or a tensors-only "
                        "checkpoint") from None
    except Exception as e:  # noqa: BLE001
        raise UserError(f"--weights {path}: not a PyTorch checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise UserError(f"--weights {path}: holds a {type(obj).__name__}, not a state dict")
    return obj


def unwrap_state_dict(sd: dict) -> dict:
    """The encoder's tensors of an official checkpoint, still under the official names (timm's filter
    renames them): MAE's {'model': ...} without its decoder, DINO's {'teacher': ...} backbone."""
    for key in ("model", "state_dict"):
        if isinstance(sd.get(key), dict):
            sd = sd[key]
    if isinstance(sd.get("teacher"), dict):  # a DINO training checkpoint: the teacher is the one evaluated
        sd = sd["teacher"]
    sd = {k.removeprefix("module."): v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if any(k.startswith("backbone.") for k in sd):
        sd = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    # MAE's decoder (and its mask token, the decoder's width) is not part of the encoder
    if any(k.startswith("decoder_") for k in sd):
        sd = {k: v for k, v in sd.items() if not k.startswith("decoder_") and k != "mask_token"}
    return sd


def checkpoint_depth(sd: dict) -> int | None:
    idx = {int(m.group(1)) for k in sd for m in [re.match(r"blocks\.(\d+)\.", k)] if m}
    return max(idx) + 1 if idx else None


# -- building ---------------------------------------------------------------------------


def _where_timm_fetches(name: str) -> str:
    try:
        cfg = get_pretrained_cfg(name)
    except Exception:  # noqa: BLE001
        cfg = None
    if cfg is None:
        return "its Hugging Face Hub repository"
    if getattr(cfg, "hf_hub_id", None):
        return f"https://huggingface.co/{cfg.hf_hub_id} (model.safetensors)"
    return getattr(cfg, "url", None) or "its Hugging Face Hub repository"


def build_timm(source: str, weights: str | None, img_size: int | None):
    """-> (model, info): a timm ViT with pretrained weights, at `img_size` (default: its own)."""
    name = source.removeprefix("timm:")
    hub = source.startswith(("hf-hub:", "local-dir:"))
    if not hub and not timm.is_model(name):
        raise UserError(f"{source}: timm has no model {name!r} (timm.list_models('*vit*') lists them)")
    kwargs: dict = {"num_classes": 0, "dynamic_img_size": True}
    if img_size is not None:
        kwargs["img_size"] = img_size
    info: dict = {"name": source, "weights": None, "weights_sha256": None}
    if weights:
        if hub:
            raise UserError(f"--weights with {source}: a hub or local-dir source brings its own weights")
        wpath = Path(weights).expanduser()
        sd = unwrap_state_dict(read_weights(wpath))
        depth = checkpoint_depth(sd)
        if depth is not None:
            kwargs["depth"] = depth  # the shape comes from the checkpoint
        info.update(weights=str(wpath.resolve()), weights_sha256=sha256_of(wpath))
        kwargs["pretrained_cfg_overlay"] = {"state_dict": sd}
    try:
        model = timm.create_model(source if hub else name, pretrained=True, **kwargs)
    except UserError:
        raise
    except RuntimeError as e:
        if weights:
            msg = " ".join(str(e).split())
            raise UserError(f"--weights {weights}: does not fit {name} ({msg[:300]})") from None
        raise _no_download(source, name, hub, e) from None
    except Exception as e:  # noqa: BLE001 - no network, missing file, unknown repository
        if weights:
            raise UserError(f"--weights {weights}: could not be loaded into {name} ({type(e).__name__}: {e})") \
                from None
        raise _no_download(source, name, hub, e) from None
    if not isinstance(model, VisionTransformer):
        raise UserError(f"{source}: a {type(model).__name__}, not a timm VisionTransformer; only ViTs are measured")
    if model.cls_token is None:
        raise UserError(f"{source}: has no CLS token; the evaluations report CLS and mean-pooled features")
    return model, info


def _no_download(source: str, name: str, hub: bool, e: Exception) -> UserError:
    first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
    if source.startswith("local-dir:"):
        return UserError(f"{source}: cannot be loaded ({first}); the folder needs config.json and "
                         "model.safetensors")
    if hub:  # --weights is refused with a hub source: a folder of the repository's files is its offline form
        return UserError(f"{source}: its weights are not on this machine and could not be downloaded ({first}); "
                         f"fetch config.json and model.safetensors from "
                         f"https://huggingface.co/{source.removeprefix('hf-hub:')} into a folder and pass "
                         "local-dir:FOLDER")
    return UserError(f"{source}: its weights are not on this machine and could not be downloaded ({first}); "
                     f"fetch them from {_where_timm_fetches(name)} and pass the file with --weights FILE")


def parse_random(source: str) -> tuple[str, int | None, dict]:
    """random:PRESET[/PATCH], PRESET a timm size or WIDTHxDEPTHxHEADS (random:128x6x4/7: the CPU
    demo's encoder) -> (preset, patch or None, {embed_dim, depth, num_heads} overrides)."""
    body = source.removeprefix("random:")
    preset, _, patch = body.partition("/")
    dims = re.fullmatch(r"(\d+)x(\d+)x(\d+)", preset)
    if (preset not in PRESETS and not dims) or (patch and not patch.isdigit()):
        raise UserError(f"{source}: expected random:PRESET[/PATCH] with PRESET one of {', '.join(PRESETS)} or "
                        "WIDTHxDEPTHxHEADS (e.g. random:vit_tiny/4, random:128x6x4/7), or random:RUN_FOLDER "
                        "(that run's shape)")
    if not dims:
        return preset, int(patch) if patch else None, {}
    width, depth, heads = (int(g) for g in dims.groups())
    if not (width and depth and heads) or width % heads or width % 4:
        raise UserError(f"{source}: width {width} must be divisible by the {heads} heads and by 4, and depth "
                        "and heads positive")
    return "vit_tiny", int(patch) if patch else None, {"embed_dim": width, "depth": depth, "num_heads": heads}


def _random_of_run(source: str):
    """random:RUN - the shape and normalisation of a run's encoder, re-initialised (None if not a run)."""
    body = Path(source.removeprefix("random:"))
    if not body.is_dir() or read_source(body) is not None:
        return None
    return open_run(body)


def build_random(spec: dict, seed: int):
    """Our encoder with MAE's initialisation drawn from `seed` (the global RNG left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ViTEncoder(EncoderSpec(**spec))


def spec_of(model):
    """Our EncoderSpec for any timm VisionTransformer (shape and input size the analyses need)."""
    pe = model.patch_embed
    blk = model.blocks[0]
    return EncoderSpec(img_size=int(pe.img_size[0]), patch_size=int(pe.patch_size[0]),
                       in_chans=int(pe.proj.in_channels), embed_dim=int(model.embed_dim),
                       depth=len(model.blocks), num_heads=int(blk.attn.num_heads),
                       mlp_ratio=blk.mlp.fc1.out_features / model.embed_dim)


# -- results folders --------------------------------------------------------------------


def _data_defaults(data: str, img_size: int | None) -> tuple[int, int, list, list]:
    """(input size, channels, mean, std) from the data, as `unmasked pretrain` derives them."""
    size = img_size or (28 if is_fashion_mnist(data) else 224)
    ds = load_data(data, base_size=eval_view_for(data, size).base_size, progress=False)
    mean, std = channel_stats(ds.train, ds.base_size, ds.channels)
    return size, ds.channels, list(mean), list(std)


def source_record(source: str, data: str | None, weights: str | None = None, img_size: int | None = None,
                  seed: int = 0) -> dict:
    """What source.json holds about a source; builds a timm encoder once, so that a bad source fails
    here, in one line, before any slow work."""
    record: dict = {"source": source, "seed": seed, "img_size": img_size}
    run = _random_of_run(source) if source.startswith("random:") else None
    if run is not None:
        spec = replace(run.spec, img_size=img_size or run.spec.img_size)
        if spec.img_size % spec.patch_size:
            raise UserError(f"--img-size {spec.img_size}: not a multiple of the run's patch size {spec.patch_size}")
        record.update(img_size=spec.img_size, in_chans=spec.in_chans, mean=list(run.mean), std=list(run.std),
                      data=data or run.data, spec=spec.to_dict(), normalisation_from=f"the run {run.run_dir}")
    elif source.startswith("random:"):
        preset, patch, dims = parse_random(source)
        if not data:
            raise UserError(f"{source}: pass --data; a random encoder takes its input size, channels and "
                            "normalisation from the data")
        size, chans, mean, std = _data_defaults(data, img_size)
        patch = patch or (4 if size <= 64 else 16)
        if size % patch:
            raise UserError(f"{source}: input size {size} is not a multiple of the patch size {patch}")
        record.update(img_size=size, in_chans=chans, mean=mean, std=std, data=data,
                      spec=encoder_spec(preset, size, patch, chans, **dims).to_dict())
    else:
        model, info = build_timm(source, weights, img_size)
        cfg = model.pretrained_cfg or {}
        record.update(img_size=int(model.patch_embed.img_size[0]), weights=info["weights"],
                      weights_sha256=info["weights_sha256"],
                      mean=list(cfg.get("mean", (0.485, 0.456, 0.406))),
                      std=list(cfg.get("std", (0.229, 0.224, 0.225))), data=data)
    return record


def prepare(source: str, out, data: str | None, weights: str | None = None, img_size: int | None = None,
            seed: int = 0) -> Path:
    """Write (or check) the results folder of a source; returns it."""
    if not out:
        raise UserError(f"{source}: not a run folder; pass --out DIR, the folder its results go to")
    out = Path(out)
    old = read_source(out)
    if old is None and (out / "config.json").is_file():
        raise UserError(f"--out {out}: a run folder of `unmasked pretrain`; give {source} its own folder")
    record = source_record(source, data, weights, img_size, seed)
    if old is not None:
        same = all(old.get(k) == record.get(k) for k in ("source", "weights_sha256", "img_size", "seed"))
        if not same:
            raise UserError(f"--out {out}: holds the results of {old.get('source')} "
                            f"({old.get('weights') or 'its own weights'}, {old.get('img_size')} px, seed "
                            f"{old.get('seed')}); give this source its own folder")
        return out
    if not record.get("data"):
        raise UserError(f"{source}: pass --data, the labeled images to measure it on")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / SOURCE_FILE, json.dumps(record, indent=1) + "\n")
    return out


def open_source(source: str, weights: str | None = None, img_size: int | None = None, data: str | None = None,
                seed: int = 0):
    """A source's LoadedEncoder without a results folder (e.g. for a warm start); run_dir is None."""
    return _loaded(source_record(source, data, weights, img_size, seed), None)


def load(folder) -> object:
    """The LoadedEncoder of a results folder (its source.json)."""
    folder = Path(folder)
    return _loaded(read_source(folder), folder)


def _loaded(rec: dict, folder: Path | None):
    where = folder / SOURCE_FILE if folder is not None else rec["source"]
    src = rec["source"]
    if src.startswith("random:"):
        enc = build_random(rec["spec"], rec.get("seed", 0))
        kind = "random"
    else:
        if rec.get("weights"):
            w = Path(rec["weights"])
            if not w.is_file():
                raise UserError(f"{where}: its weights file {w} is gone")
            if sha256_of(w) != rec.get("weights_sha256"):
                raise UserError(f"{where}: its weights file {w} changed since the results "
                                "were computed (sha256 differs); give the new file its own --out folder")
        enc, _ = build_timm(src, rec.get("weights"), rec.get("img_size"))
        kind = "public"
    spec = spec_of(enc) if kind == "public" else enc.spec
    enc.spec = spec
    info = {"name": src, "weights": rec.get("weights"), "weights_sha256": rec.get("weights_sha256"),
            "seed": rec.get("seed") if kind == "random" else None,
            "normalisation": {"mean": rec["mean"], "std": rec["std"],
                              "from": rec.get("normalisation_from", "the data's channel statistics")
                              if kind == "random" else "the encoder's pretrained_cfg"},
            "img_size": spec.img_size, "patch_size": spec.patch_size, "in_chans": spec.in_chans,
            "prefix_tokens": int(getattr(enc, "num_prefix_tokens", 1))}
    return LoadedEncoder(enc, spec, rec["mean"], rec["std"], 1.0, rec.get("data") or "", kind, folder, None,
                         Path(where), source_info=info)
