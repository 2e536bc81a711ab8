"""Fashion-MNIST from IDX files: Debian's dataset-fashion-mnist, a torchvision download, or any
folder holding the four files (gzip-compressed or not)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from unmasked.errors import UserError

NAME = "fashion-mnist"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
INSTALL_HINT = (
    "install it with `apt-get install -y dataset-fashion-mnist`, or pass --data DIR where DIR holds "
    + ", ".join(f"{f}[.gz]" for f in FILES.values())
)


def _find_file(root: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        p = root / name
        if p.is_file():
            return p
    return None


def idx_root(root: Path) -> Path | None:
    """The folder under `root` holding the four IDX files (root itself, or torchvision's raw/)."""
    for cand in (root, root / "raw", root / "FashionMNIST" / "raw"):
        if all(_find_file(cand, stem) for stem in FILES.values()):
            return cand
    return None


def default_roots() -> list[Path]:
    roots = []
    if os.environ.get("UNMASKED_FASHION_MNIST"):
        roots.append(Path(os.environ["UNMASKED_FASHION_MNIST"]))
    roots += [DEBIAN_DIR, Path.home() / ".cache" / "unmasked" / "fashion-mnist"]
    return roots


def locate(path: str | Path | None = None) -> Path:
    """Where the IDX files are: `path` if given, else the known install locations."""
    candidates = [Path(path)] if path is not None else default_roots()
    for c in candidates:
        found = idx_root(c)
        if found is not None:
            return found
    where = ", ".join(str(c) for c in candidates)
    raise UserError(f"Fashion-MNIST IDX files not found in {where}; {INSTALL_HINT}")


def read_idx(path: Path, expect_magic: int) -> np.ndarray:
    """Read one IDX file, checking its magic number and that its size matches its header."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise UserError(f"cannot read IDX file {path}: {e}") from None
    if len(data) < 8:
        raise UserError(f"IDX file {path} is truncated ({len(data)} bytes, expected a header of at least 8)")
    magic = int.from_bytes(data[0:4], "big")
    if magic != expect_magic:
        raise UserError(f"IDX file {path} has magic number {magic}, expected {expect_magic}: not a Fashion-MNIST "
                        f"{'image' if expect_magic == IMAGE_MAGIC else 'label'} file")
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise UserError(f"IDX file {path} is truncated or padded: {len(data)} bytes, header says {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def load(path: str | Path | None = None):
    """-> dict with train/test images (N, 1, 28, 28) uint8 and labels (N,) int64, and `root`."""
    root = locate(path)
    arrays = {}
    for key, stem in FILES.items():
        magic = IMAGE_MAGIC if key.endswith("images") else LABEL_MAGIC
        arrays[key] = read_idx(_find_file(root, stem), magic)
    for split in ("train", "test"):
        imgs, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if imgs.ndim != 3 or labels.ndim != 1 or len(imgs) != len(labels):
            raise UserError(f"Fashion-MNIST {split} files in {root} disagree: "
                            f"images {imgs.shape}, labels {labels.shape}")
        if labels.max(initial=0) >= len(CLASSES):
            raise UserError(f"Fashion-MNIST {split} labels in {root} go up to {labels.max()}, expected 0-9")
    return {
        "root": root,
        "train_images": arrays["train_images"][:, None],
        "train_labels": arrays["train_labels"].astype(np.int64),
        "test_images": arrays["test_images"][:, None],
        "test_labels": arrays["test_labels"].astype(np.int64),
    }
