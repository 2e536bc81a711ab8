"""Decode and augmentation throughput on a folder of 4:3 JPEGs, and the cache size per image.

    python benchmarks/decode_throughput.py [--images 200] [--json out.json] [--label now]

Writes `--images` synthetic 640 x 480 JPEGs (quality 90, smooth colour fields with noise, so
they compress like photos) into a temporary folder, then for each objective's training decode
times `decode_all` (the decode into the in-memory cache, `--workers` loader processes, starting
them included) and one objective's views of a batch of 64 cached images (`BatchAugment` for
every view spec the objective builds at 224 px, as the training loop calls it), in images per
second, and prints the bytes each cached image takes. Fine-tuning's per-image timm transform is
timed on the same cached images.

"square" is the centre-square decode (shorter side to the base, centre crop: what every
training decode did before whole images were kept, and what the held-out split still gets);
"whole" keeps the aspect ratio up to 4:3. Run with PYTHONPATH pointing at an older checkout
(`git worktree add /tmp/old <rev>`), the script measures that checkout's code: there, only the
square decode exists.
"""

from __future__ import annotations

import argparse
import inspect
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from unmasked.build import augment_spec, build_objective
from unmasked.config import PretrainConfig, resolve_defaults
from unmasked.data import dataset
from unmasked.data.augment import BatchAugment
from unmasked.rng import BatchRandom

OBJECTIVES = ("mae", "lut", "dinov2")
# views do not depend on these
TINY = dict(model="vit_tiny", width=32, depth=1, heads=2, decoder_width=32, decoder_depth=1, decoder_heads=2,
            proj_hidden=64, dino_heads_k=64, dino_head_hidden=32, dino_head_bottleneck=16)
BATCH = 64


def write_jpegs(folder: Path, n: int, size=(640, 480), seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    files = []
    for i in range(n):
        f = rng.uniform(0.5, 3.0, 3) * np.pi / np.array([w, h, w + h])
        base = np.stack([np.sin(xx * f[0] + i), np.cos(yy * f[1] + 2 * i), np.sin((xx + yy) * f[2] + 3 * i)], -1)
        img = (127 + 100 * base + rng.normal(0, 12, (h, w, 3))).clip(0, 255).astype(np.uint8)
        p = folder / f"{i:04d}.jpg"
        Image.fromarray(img).save(p, quality=90)
        files.append(p)
    return files


def config(objective: str):
    """The objective's resolved config on an image folder at 224 px (tiny model: views only)."""
    kw = dict(objective=objective, data="/photos", out="/tmp/unused", img_size=224, patch_size=16, device="cpu", **TINY)
    make = getattr(PretrainConfig, "flat", None)  # older checkouts: PretrainConfig(**flat options)
    cfg = resolve_defaults(make(**kw) if make else PretrainConfig(**kw), False)
    cfg.in_chans, cfg.mean, cfg.std = 3, [0.5] * 3, [0.25] * 3
    return cfg


def train_base(cfg) -> int:
    try:
        from unmasked.data.recipe import train_base_size
    except ImportError:  # before whole images: img_size / crop_pct (DINOv2 took the pad crop's 224)
        return round(cfg.img_size / cfg.crop_pct)
    return train_base_size(cfg)


def timed_decode(files, base: int, whole: bool, workers: int):
    args = (files, base, 3, workers, False, False, "decode")
    t0 = time.perf_counter()
    out = dataset.decode_all(*args, 4 / 3) if whole else dataset.decode_all(*args)
    dt = time.perf_counter() - t0
    return out[0], (out[3] if len(out) > 3 else None), dt


def batch_of(images, extents, n: int):
    if extents is None:
        return images[:n]
    from unmasked.data.augment import StoredImages

    return StoredImages(images[:n], extents[:n])


def timed_views(specs, batch, reps: int) -> float:
    """Median seconds for one batch through every view spec (after one untimed call)."""
    augs = [BatchAugment(s) for s in specs]
    times = []
    for r in range(reps + 1):
        rng = BatchRandom(0, r, 0, len(batch))
        t0 = time.perf_counter()
        for a in augs:
            a(batch, rng)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def timed_finetune(images, extents, n: int) -> float:
    """Images/s of fine-tuning's per-image training transform (MAE's recipe)."""
    from unmasked.eval import finetune

    tf = finetune.train_transform(finetune.FinetuneRecipe(), 224, (0.5,) * 3, (0.25,) * 3)
    # PIL images (timm's transform), or in older checkouts the uint8 tensor (torchvision v2 ops)
    to_input = getattr(finetune, "to_pil", lambda img: img)
    inputs = []
    for i in range(n):
        img = images[i] if extents is None else images[i, :, : extents[i, 0], : extents[i, 1]]
        inputs.append(to_input(img))
    torch.manual_seed(0)
    t0 = time.perf_counter()
    for x in inputs:
        tf(x)
    return n / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=BATCH)
    ap.add_argument("--label", default="this checkout")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    whole_exists = "max_aspect" in inspect.signature(dataset.decode_all).parameters
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = write_jpegs(Path(tmp), args.images)
        for objective in OBJECTIVES:
            cfg = config(objective)
            torch.manual_seed(0)
            specs = build_objective(cfg).view_specs(augment_spec(cfg))
            base = train_base(cfg)
            for whole in ((False, True) if whole_exists else (False,)):
                images, extents, dt = timed_decode(files, base, whole, args.workers)
                sec = timed_views(specs, batch_of(images, extents, args.batch), args.reps)
                ft = timed_finetune(images, extents, args.batch) if objective == "mae" else None
                rows.append({
                    "code": args.label, "objective": objective, "decode": "whole" if whole else "square",
                    "base": base, "stored": "x".join(map(str, images.shape[1:])),
                    "bytes_per_image": images[0].numel() * images.element_size(),
                    # what --cache-gb counts: a buffer that holds either orientation (side x side)
                    "bytes_counted": 3 * (round(base * 4 / 3) if whole else base) ** 2,
                    "decode_images_s": round(len(images) / dt, 1), "views": len(specs),
                    "augment_images_s": round(args.batch / sec, 1),
                    "finetune_transform_images_s": None if ft is None else round(ft, 1),
                })
                print(json.dumps(rows[-1]), flush=True)
    print(f"# {args.images} JPEGs 640x480 q90, {args.workers} decode workers, {args.threads} threads, "
          f"batch {args.batch} at 224 px, median of {args.reps}; torch {torch.__version__}, {platform.machine()}",
          file=sys.stderr)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
