"""The raw-pixel row of a study report: the kNN protocol on the images themselves.

Pixels in [0, 1] at the encoders' input size (the same resize and centre crop as evaluation),
flattened and L2-normalised by the kNN code. No training: the floor any encoder should beat
(84.6% kNN20 on Fashion-MNIST).
"""

from __future__ import annotations

import torch

from unmasked.data.augment import eval_view
from unmasked.data.dataset import load_data
from unmasked.eval.features import iterate_split
from unmasked.eval.knn import KS, TEMPERATURE, knn_accuracy

FILE = "raw_pixels.json"


def _pixels(split, base: int, channels: int, img_size: int, crop_pct: float) -> tuple[torch.Tensor, torch.Tensor]:
    feats, idx = [], []
    zeros, ones = [0.0] * channels, [1.0] * channels
    for images, i in iterate_split(split, 1024, base, channels):
        feats.append(eval_view(images, img_size, zeros, ones, crop_pct).flatten(1))
        idx.append(i)
    index = torch.cat(idx)
    return torch.cat(feats), split.labels[index]


def raw_pixel_knn(config: dict) -> dict:
    """kNN top-1 of raw pixels for the data, input size and channels of a run's config.json."""
    data = config["data"]
    # the centre crop the training decode implies: 224 of 256 where views RandomResizedCrop
    crop_pct = min(1.0, config["img_size"] / config["base_size"]) if config.get("base_size") else 1.0
    ds = load_data(data, base_size=config["base_size"], channels=config["in_chans"], progress=False)
    if not ds.labeled:
        return {"data": data, "note": "unlabeled data: no raw-pixel kNN"}
    # the whole training split, as `unmasked eval knn` uses (a run's --subset only limits pretraining)
    tr, tr_y = _pixels(ds.train, ds.base_size, ds.channels, config["img_size"], crop_pct)
    te, te_y = _pixels(ds.heldout, ds.base_size, ds.channels, config["img_size"], crop_pct)
    acc = knn_accuracy(tr, tr_y, te, te_y, len(ds.classes), KS, TEMPERATURE)
    return {"data": ds.name, "img_size": config["img_size"], "train_images": len(tr), "test_images": len(te),
            "temperature": TEMPERATURE, "top1": {str(k): v["top1"] for k, v in acc.items()}}
