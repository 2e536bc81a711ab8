"""Generate small image folders for tests."""

from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, size=(40, 30), mode="RGB", seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    if mode == "I;16":
        a = rng.integers(0, 65535, (h, w), dtype=np.uint16)
        Image.fromarray(a).save(path)
        return path
    base = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), "RGB")
    img = base.convert(mode) if mode != "RGB" else base
    img.save(path)
    return path


def class_folder(root: Path, classes=("cat", "dog"), per_class=5, size=(40, 30), ext="png", mode="RGB"):
    for ci, c in enumerate(classes):
        for i in range(per_class):
            write_image(root / c / f"{i}.{ext}", size=size, mode=mode, seed=ci * 100 + i)
    return root
