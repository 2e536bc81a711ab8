"""`unmasked embed SOURCE --data D --out FILE`: CLS and mean-pooled embeddings of every image.

Every image of the dataset (its training and held-out splits, each image once) goes through the
encoder in the evaluation view (eval/view.py), exactly as kNN and the linear probe see it. FILE
(.safetensors) holds `cls` and `mean` (N, D) float32 (the CLS token after the final norm; the
mean of the patch tokens, prefix tokens such as registers excluded) and, for labeled data,
`labels` (N,); its metadata records the source, the data and the transform. Beside it, FILE.csv
gives row by row the split, the image file (`fashion-mnist:<split>:<index>` for the IDX data),
the label and the class name. Unreadable images are left out, each named in a warning.

Features are cached per split by content, with the same keys and files as the evaluations
(eval/cache_key.py, `<run>/features/`), so a second embed, or one after `eval knn` on streamed
data, reads them instead of running the encoder.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from unmasked.data.dataset import ImageData, is_fashion_mnist, load_data
from unmasked.devices import resolve_device
from unmasked.errors import UserError
from unmasked.eval.cache_key import feature_cache_key
from unmasked.eval.common import base_size_for, eval_transform, evaluation_view
from unmasked.eval.features import extract_features
from unmasked.eval.pixels import cache_dir
from unmasked.eval.run_files import save_in_run
from unmasked.files import atomic_write, atomic_write_text
from unmasked.options import (
    DEVICE,
    MAX_SEED,
    PIXELS,
    TEXT,
    count,
    int_range,
    opt,
    positive_int,
)
from unmasked.runs import open_encoder

FEATURES_DIR = "features"


def check_out(out: str | Path) -> Path:
    out = Path(out)
    if out.is_dir():
        raise UserError(f"--out {out}: a folder; embed writes one file (e.g. {out / 'embeddings.safetensors'})")
    if out.suffix != ".safetensors":
        raise UserError(f"--out {out}: expected a .safetensors file name (the CSV is written beside it)")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: no such folder {out.parent}")
    return out


def feature_cache_dir(loaded) -> Path:
    """The run folder's features/ (shared with the evaluations), else the per-user cache."""
    run_dir = getattr(loaded, "run_dir", None)
    if run_dir is not None and Path(run_dir).is_dir():
        return Path(run_dir) / FEATURES_DIR

    return cache_dir() / FEATURES_DIR


def _split_parts(ds: ImageData) -> list[tuple[str, str, object]]:
    """(cache name, name written in the CSV, split) of every non-empty split."""
    parts = [("train", "train", ds.train)]
    if ds.heldout is not None and len(ds.heldout):
        parts.append(("heldout", ds.heldout_name, ds.heldout))
    return parts


def _file_names(ds: ImageData, split_name: str, split, index: torch.Tensor) -> list[str]:
    if split.files is not None:
        return [str(split.files[i]) for i in index.tolist()]
    if is_fashion_mnist(ds.name):
        return [f"fashion-mnist:{split_name}:{i}" for i in index.tolist()]
    return [f"{ds.name}:{split_name}:{i}" for i in index.tolist()]


def split_embeddings(loaded, ds: ImageData, cache_name: str, split, device: torch.device, batch_size: int,
                     num_workers: int, progress: bool, cache_dir: Path) -> tuple[dict, bool]:
    """({"cls", "mean", "index"[, "labels"]}, whether it came from the cache) for one split."""
    key = feature_cache_key(cache_name, split, loaded.encoder, eval_transform(loaded, ds))
    cache_file = cache_dir / f"{cache_name}-{key}.pt"
    if cache_file.is_file():
        try:
            return torch.load(cache_file, map_location="cpu", weights_only=True), True
        except Exception:  # noqa: BLE001 - a damaged cache is recomputed
            pass
    view = evaluation_view(loaded, ds.name)
    feats = extract_features(loaded.encoder, split, loaded.mean, loaded.std, view.crop_pct, device,
                             batch_size=batch_size, base=ds.base_size, channels=ds.channels,
                             num_workers=num_workers, progress=progress, desc=f"embedding ({cache_name})",
                             size=view.img_size)
    if split.labels is not None:
        feats["labels"] = split.labels[feats["index"]].clone()
    save_in_run(cache_dir, cache_file.name, lambda tmp: torch.save(feats, tmp))  # best effort
    return feats, False


@dataclass
class EmbedSettings:
    """What `unmasked embed` embeds, and how (the source's own options are the command line's)."""

    seed: int = opt(0, "a random: source's seed", rule=int_range(0, MAX_SEED, "seed 0, like any other"))
    data: str | None = opt(None, "dataset to embed (default: the encoder's own)", rule=TEXT)
    device: str = opt("auto", "'auto', 'cpu', 'cuda' or 'cuda:N'", rule=DEVICE)
    batch_size: int = opt(256, "images per forward pass", rule=positive_int())
    num_workers: int = opt(min(8, os.cpu_count() or 1),
                           "decoding workers for image folders (default: CPU cores, up to 8)",
                           rule=count("decode in the main process"))
    max_image_pixels: int | None = opt(None, "skip images with more pixels than this (default: "
                                       "100000000, as in pretrain)", metavar="N", rule=PIXELS)


def embed(source, out: str | Path, data: str | None = None, device: str = "auto", batch_size: int = 256,
          num_workers: int = 0, progress: bool = True, weights: str | None = None, img_size: int | None = None,
          seed: int = 0) -> dict:
    """`source` is anything `runs.open_encoder` takes: a run or results folder, or a source string
    (timm:NAME with `weights`, hf-hub:, local-dir:, random:... seeded by `seed`), whose features
    are cached in the per-user cache."""
    out = check_out(out)
    dev = resolve_device(device)
    loaded = open_encoder(source, weights=weights, img_size=img_size, data=data, seed=seed)
    data = data or loaded.data
    if not data:
        raise UserError(f"{source}: no dataset of its own; pass --data (an image folder or fashion-mnist)")
    # streamed (cache_gb=0): each image keeps its file name, and is decoded once, here
    ds = load_data(data, base_size=base_size_for(loaded, data), channels=loaded.encoder.patch_embed.proj.in_channels,
                   num_workers=num_workers, progress=progress, cache_gb=0.0)
    cache_dir = feature_cache_dir(loaded)
    tensors: dict[str, list[torch.Tensor]] = {"cls": [], "mean": [], "labels": []}
    rows, cached = [], {}
    for cache_name, split_name, split in _split_parts(ds):
        feats, cached[split_name] = split_embeddings(loaded, ds, cache_name, split, dev, batch_size, num_workers,
                                                     progress, cache_dir)
        tensors["cls"].append(feats["cls"].float())
        tensors["mean"].append(feats["mean"].float())
        labels = feats.get("labels")
        if labels is not None:
            tensors["labels"].append(labels.long())
        names = _file_names(ds, split_name, split, feats["index"])
        for j, name in enumerate(names):
            lab = int(labels[j]) if labels is not None else None
            cls_name = ds.classes[lab] if lab is not None and ds.classes else ""
            rows.append((len(rows), split_name, name, "" if lab is None else lab, cls_name))
    if not rows:
        raise UserError(f"--data {data}: no image could be read")
    result = {k: torch.cat(v).contiguous() for k, v in tensors.items() if v}
    if "labels" in result and len(result["labels"]) != len(rows):  # a labeled split beside an unlabeled one
        del result["labels"]
    transform = eval_transform(loaded, ds)
    csv_path = out.with_suffix(".csv")
    meta = {"source": str(source), "encoder": str(getattr(loaded, "source", source)),
            "objective": str(loaded.objective),
            "data": ds.name, "images": str(len(rows)), "transform": json.dumps(transform), "rows": csv_path.name,
            "cls": "CLS token after the final norm",
            "mean": "mean of the patch tokens after the final norm (prefix tokens excluded)"}
    if loaded.source_info:
        meta["source_info"] = json.dumps(loaded.source_info)
    if ds.classes:
        meta["classes"] = json.dumps(list(ds.classes))
    atomic_write(out, lambda tmp: save_file(result, str(tmp), metadata=meta))
    text = io.StringIO()
    w = csv.writer(text, lineterminator="\n")
    w.writerow(["row", "split", "file", "label", "class"])
    w.writerows(rows)
    atomic_write_text(csv_path, text.getvalue())
    return {"file": str(out), "csv": str(csv_path), "images": len(rows), "dim": int(result["cls"].shape[1]),
            "splits": {s: sum(1 for r in rows if r[1] == s) for s in cached}, "cached": cached,
            "data": ds.name, "transform": transform, "cache_dir": str(cache_dir)}
