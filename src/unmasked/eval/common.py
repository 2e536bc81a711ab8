"""What every evaluation needs: the labeled data an encoder is judged on, and cached features."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from unmasked.data.dataset import ImageData, is_fashion_mnist, load_data
from unmasked.devices import resolve_device
from unmasked.errors import UserError
from unmasked.eval.cache_key import feature_cache_key
from unmasked.eval.features import extract_features, feature_autocast
from unmasked.eval.run_files import save_in_run, save_result
from unmasked.eval.view import EvalView, eval_view_for
from unmasked.options import DEVICE, PATH, PIXELS, TEXT, count, opt, positive_int
from unmasked.run_folder import LoadedEncoder
from unmasked.runs import load_encoder


@dataclass
class EvalOptions:
    """What every evaluation of an encoder takes (kNN, linear probe, fine-tuning, analyses)."""

    weights: str | None = opt(None, "timm:NAME only: load this file (official .pth, .safetensors, timm file) "
                              "offline instead of downloading; never executes code from it", metavar="FILE",
                              rule=PATH)
    data: str | None = opt(None, "evaluate on this dataset instead of the run's own", rule=TEXT)
    device: str = opt("auto", "'auto', 'cpu', 'cuda' or 'cuda:N'", rule=DEVICE)
    batch_size: int = opt(256, "images per forward pass", rule=positive_int())
    num_workers: int = opt(min(8, os.cpu_count() or 1),
                           "decoding workers for image folders (default: CPU cores, up to 8)",
                           rule=count("decode in the main process"))
    max_image_pixels: int | None = opt(None, "skip images with more pixels than this (default: 100000000, as "
                                       "in pretrain)", metavar="N", rule=PIXELS)


def evaluation_view(loaded: LoadedEncoder, data: str) -> EvalView:
    """One view per dataset, not per training crop (see eval/view.py)."""
    return eval_view_for(data, loaded.eval_size or loaded.spec.img_size)


def base_size_for(loaded: LoadedEncoder, data: str) -> int:
    return evaluation_view(loaded, data).base_size


def labeled_data(loaded: LoadedEncoder, data: str | None, what: str, num_workers: int = 0,
                 progress: bool = True, cache_gb: float = 8.0, keep_aspect: bool = False) -> ImageData:
    """keep_aspect: the training split keeps whole images (fine-tuning's random crops)."""
    data = data or loaded.data
    ds = load_data(data, base_size=base_size_for(loaded, data), channels=loaded.spec.in_chans,
                   num_workers=num_workers, progress=progress, cache_gb=cache_gb, keep_aspect=keep_aspect)
    if not ds.labeled:
        raise UserError(
            f"{what} needs labels, but {data} is unlabeled (no class folders / held-out split). Pass --data with "
            "a labeled folder (root/<class>/... or root/train/<class>/ + root/val/<class>/)"
        )
    return ds


def eval_transform(loaded: LoadedEncoder, data: ImageData) -> dict:
    """What turns a stored image into encoder input at evaluation (the dataset's one evaluation view,
    plus channels and normalisation): part of feature-cache keys and of every result file."""
    t = {**evaluation_view(loaded, data.name).describe(), "channels": data.channels,
         "img_size": loaded.eval_size or loaded.spec.img_size, "mean": list(loaded.mean), "std": list(loaded.std)}
    if data.channels == 3 and is_fashion_mnist(data.name):  # greyscale data, RGB encoder
        t["grey_to_rgb"] = "the greyscale images repeated to 3 channels for a 3-channel encoder"
    return t


def split_features(loaded: LoadedEncoder, data: ImageData, split: str, device: torch.device,
                   batch_size: int = 256, num_workers: int = 0, progress: bool = True,
                   cache: bool = True) -> dict[str, torch.Tensor]:
    """Features of data.train / data.heldout, cached in <run>/features/ keyed by weights and data."""
    part = data.train if split == "train" else data.heldout
    key = feature_cache_key(split, part, loaded.encoder,
                            {**eval_transform(loaded, data), "precision": feature_precision(device)})
    cache_file = loaded.run_dir / "features" / f"{split}-{key}.pt"
    if cache and cache_file.is_file():
        try:
            return torch.load(cache_file, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a damaged cache is recomputed
            pass
    crop_pct = evaluation_view(loaded, data.name).crop_pct
    feats = extract_features(loaded.encoder, part, loaded.mean, loaded.std, crop_pct, device,
                             batch_size=batch_size, base=data.base_size, channels=data.channels,
                             num_workers=num_workers, progress=progress, desc=f"features ({split})",
                             size=evaluation_view(loaded, data.name).img_size)
    feats["labels"] = part.labels[feats["index"]].clone()
    if cache:  # an optimisation: a read-only run folder still evaluates

        save_in_run(cache_file.parent, cache_file.name, lambda tmp: torch.save(feats, tmp))
    return feats


def feature_precision(device: torch.device) -> str:
    """How the features were computed (extract_features' autocast): "bfloat16 autocast" on a GPU,
    "float32" elsewhere. Part of the feature-cache key and of every result file."""
    dtype = feature_autocast(torch.device(device))
    return "float32" if dtype is None else f"{str(dtype).removeprefix('torch.')} autocast"


# The top-level keys of every result file (knn.json, linear.json, finetune.json and their variants),
# in this order; what a protocol adds (its recipe, per-k results, history) follows them.
ENVELOPE_KEYS = ("protocol", "description", "default_protocol", "file", "top1", "results", "pixels",
                 "data", "train_split", "test_split", "train_images", "test_images", "num_classes",
                 "encoder", "objective", "transform", "precision", "time_s")


def result_envelope(protocol: str, description: str, loaded: LoadedEncoder, ds: ImageData, *, file: str,
                    default_protocol: bool, top1: dict, results: dict, precision: str, time_s: float,
                    pixels: dict | None = None, **extra) -> dict:
    """The one shape of a result file: what was measured (protocol, headline top-1, all results),
    on what (data, splits, encoder, evaluation view, precision), how long it took, then the
    protocol's own fields. Files written before `precision` was recorded still read: readers use
    only `top1` and the provenance keys, which every version has."""
    out = {"protocol": protocol, "description": description, "default_protocol": default_protocol,
           "file": file, "top1": top1, "results": results}
    if pixels is not None:
        out["pixels"] = pixels
    out.update(provenance(loaded, ds))
    out["precision"] = precision
    out["time_s"] = round(time_s, 1)
    clash = set(out) & set(extra)
    if clash:
        raise ValueError(f"result fields {sorted(clash)} belong to the envelope")
    return {**out, **extra}


def write_result(loaded: LoadedEncoder, name: str, result: dict) -> dict:
    """<run>/name; a failed write is noted in result["not_saved"] instead of losing the numbers."""
    return save_result(loaded.run_dir, name, result)


def frozen_features(path, data: str | None, device: str, batch_size: int, num_workers: int, progress: bool,
                    what: str, img_size: int | None = None):
    """Everything a frozen-feature protocol starts from: (encoder, data, device, train and held-out
    features); `img_size` evaluates at another input size than the encoder was trained at."""
    dev = resolve_device(device)
    loaded = load_encoder(path)
    if img_size is not None and img_size != loaded.spec.img_size:
        if img_size % loaded.spec.patch_size:
            raise UserError(f"--img-size {img_size}: not a multiple of the encoder's patch size "
                            f"{loaded.spec.patch_size}")
        loaded.eval_size = img_size
    ds = labeled_data(loaded, data, what, num_workers, progress)
    tr = split_features(loaded, ds, "train", dev, batch_size, num_workers, progress)
    te = split_features(loaded, ds, "heldout", dev, batch_size, num_workers, progress)
    return loaded, ds, dev, tr, te


def is_own_data(loaded: LoadedEncoder, ds: ImageData) -> bool:
    """Whether an evaluation ran on the data the encoder was pretrained on (the default protocol)."""
    return same_data(ds.name, loaded.data)


def same_data(data: str, run_data: str) -> bool:
    if is_fashion_mnist(data) or is_fashion_mnist(run_data):
        return is_fashion_mnist(data) and is_fashion_mnist(run_data)
    return Path(data).resolve() == Path(run_data).resolve()


def result_name(stem: str, parts: list[str], data: str, run_data: str, ext: str = ".json") -> str:
    """knn.json for the default protocol; knn-k1-T0.5-on-<data>.json for a variant, so that a
    variant never replaces the default result that `compare` reads. `study` names the file its
    evaluation options write with this same function."""
    if not same_data(data, run_data):
        parts = [*parts, "on-" + re.sub(r"[^A-Za-z0-9._-]+", "_", Path(data).name)]
    return stem + "".join(f"-{p}" for p in parts) + ext


def variant_name(stem: str, parts: list[str], loaded: LoadedEncoder, ds: ImageData, ext: str = ".json") -> str:
    return result_name(stem, parts, ds.name, loaded.data, ext)


def provenance(loaded: LoadedEncoder, ds: ImageData) -> dict:
    """The fields every result file carries: which data, which splits and sizes, which encoder, and the
    evaluation view the features were computed on."""
    return {
        "data": ds.name,
        "train_split": "train",
        "test_split": ds.heldout_name,
        "train_images": len(ds.train),
        "test_images": len(ds.heldout),
        "num_classes": len(ds.classes),
        "encoder": str(loaded.source),
        "objective": loaded.objective,
        **({"source": loaded.source_info} if loaded.source_info else {}),
        "transform": eval_transform(loaded, ds),
    }
