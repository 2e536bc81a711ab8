"""Image folders: finding the files and labels, and decoding them to fixed-size uint8 tensors.

Layouts (checked in this order):
  root/train/<class>/*, root/val/<class>/*   labeled, with its own held-out split
  root/<class>/*                             labeled; a held-out split is drawn per class, reproducibly
  root/*.jpg (or --unlabeled)                unlabeled: pretraining works, kNN/linear cannot

Every image is decoded once, with mode conversion (palette, alpha, CMYK, 16-bit) to 1 or 3
channels, and its shorter side resized to the base size:
- for evaluation, to a base x base centre square (the evaluation view crops from it);
- for training (`max_aspect`), keeping its aspect ratio up to max_aspect:1 (a longer side beyond
  that is centre-cropped to the bound), stored at the top left of a fixed side x side buffer
  (side = round(base * max_aspect)) whose remainder repeats the image's last row and column, so a
  crop sampled near the image's edge sees the edge, as with border padding. Each image's true
  extent (h, w) travels with it.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from unmasked.data.augment import StoredImages
from unmasked.data.layout_notes import announce, layout_note
from unmasked.errors import UserError
from unmasked.notes import warn

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
# PIL's own "decompression bomb" check is replaced by MAX_PIXELS, an option (--max-image-pixels):
# users' archives hold scans and panoramas over PIL's limit, while a limit of 1e9 let one small
# PNG decode to 3 GB per worker. 100 MP (300 MB as RGB) admits medium-format photos.
Image.MAX_IMAGE_PIXELS = None
MAX_PIXELS = 100_000_000
# Training keeps an image's aspect ratio up to this bound (4:3 photos whole; a panorama's middle 4:3).
MAX_ASPECT = 4 / 3
ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclass
class FolderSplit:
    files: list[Path]
    labels: list[int] | None


@dataclass
class FolderIndex:
    root: Path
    layout: str  # "split", "classes" or "unlabeled"
    classes: list[str] | None
    train: FolderSplit
    heldout: FolderSplit | None
    note: str | None = None  # why a folder that looks labeled is read otherwise (announced once)


def is_image_file(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


# A folder holding one of these is an unmasked run (or demo) folder: its figures and reconstructions
# are the tool's output, never training images, and its .lock is no class
RUN_FOLDER_MARKERS = (".lock", "checkpoint.pt", ".unmasked-demo")
_skipped_runs: set[Path] = set()  # run folders left out of a scan, named once per process


def is_run_folder(d: Path) -> bool:
    return any((d / m).exists() for m in RUN_FOLDER_MARKERS)


def _skip_run_folder(d: Path) -> bool:
    if not is_run_folder(d):
        return False
    if d not in _skipped_runs:
        _skipped_runs.add(d)
        announce(f"{d} is an unmasked run folder: its files are left out of the images")
    return True


def _images_in(folder: Path, recursive: bool) -> list[Path]:
    if not recursive:
        return sorted(p for p in folder.iterdir() if is_image_file(p))
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):  # as rglob: symlinked folders not followed
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if not _skip_run_folder(here / d)]
        found += [p for p in (here / f for f in filenames) if is_image_file(p)]
    return sorted(found)


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")
                  and not _skip_run_folder(d))


def _labeled(folder: Path, classes: list[str]) -> FolderSplit:
    files, labels = [], []
    for i, c in enumerate(classes):
        found = _images_in(folder / c, recursive=True) if (folder / c).is_dir() else []
        files += found
        labels += [i] * len(found)
    return FolderSplit(files, labels)


def scan(root: str | Path, unlabeled: bool = False, val_fraction: float = 0.1, seed: int = 0) -> FolderIndex:
    index = _scan(root, unlabeled, val_fraction, seed)
    if not unlabeled:
        root = Path(root)
        index.note = layout_note(root, index.layout, index.classes, _images_in(root, recursive=False),
                                 _class_dirs(root))
        announce(index.note)
    return index


def _scan(root: str | Path, unlabeled: bool, val_fraction: float, seed: int) -> FolderIndex:
    root = Path(root)
    if not root.exists():
        raise UserError(f"--data {root}: no such file or folder")
    if not root.is_dir():
        raise UserError(f"--data {root}: not a folder (expected an image folder or 'fashion-mnist')")
    if unlabeled:
        files = _images_in(root, recursive=True)
        _require_images(files, root)
        return FolderIndex(root, "unlabeled", None, FolderSplit(files, None), None)

    train_dir, val_dir = root / "train", root / "val"
    if train_dir.is_dir() and val_dir.is_dir() and _class_dirs(train_dir):
        classes = [d.name for d in _class_dirs(train_dir)]
        train = _labeled(train_dir, classes)
        _require_images(train.files, train_dir)
        val_classes = {d.name for d in _class_dirs(val_dir)}
        extra = sorted(val_classes - set(classes))
        if extra:
            raise UserError(f"{val_dir} has classes that {train_dir} lacks: {', '.join(extra)}")
        heldout = _labeled(val_dir, classes)
        missing = [c for i, c in enumerate(classes) if i not in set(heldout.labels)]
        if missing:
            raise UserError(
                f"{val_dir} has no images for class(es) {', '.join(missing)} that {train_dir} has; "
                "every class needs held-out images"
            )
        empty = [c for i, c in enumerate(classes) if i not in set(train.labels)]
        if empty:
            raise UserError(f"{train_dir}: class folder(s) without images: {', '.join(empty)}")
        return FolderIndex(root, "split", classes, train, heldout)

    top_images = _images_in(root, recursive=False)
    dirs = _class_dirs(root)
    if top_images or not dirs:
        files = _images_in(root, recursive=True)
        _require_images(files, root)
        return FolderIndex(root, "unlabeled", None, FolderSplit(files, None), None)

    classes = [d.name for d in dirs]
    labeled = _labeled(root, classes)
    _require_images(labeled.files, root)
    empty = [c for i, c in enumerate(classes) if i not in set(labeled.labels)]
    if empty:
        raise UserError(f"{root}: class folder(s) without images: {', '.join(empty)}")
    if len(classes) < 2:
        files = labeled.files
        return FolderIndex(root, "unlabeled", None, FolderSplit(files, None), None)
    train, heldout = _split_per_class(labeled, len(classes), val_fraction, seed)
    return FolderIndex(root, "classes", classes, train, heldout)


def _require_images(files: list[Path], folder: Path) -> None:
    if not files:
        raise UserError(
            f"{folder}: no image files found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})"
        )


def _split_per_class(labeled: FolderSplit, n_classes: int, fraction: float, seed: int):
    """Hold out `fraction` of each class (at least one image where the class has two or more)."""
    by_class: list[list[Path]] = [[] for _ in range(n_classes)]
    for f, y in zip(labeled.files, labeled.labels):
        by_class[y].append(f)
    rnd = random.Random(seed)
    tr, tl, vf, vl = [], [], [], []
    for y, files in enumerate(by_class):
        files = sorted(files)
        rnd.shuffle(files)
        n_val = max(1, round(len(files) * fraction)) if len(files) >= 2 else 0
        vf += files[:n_val]
        vl += [y] * n_val
        tr += files[n_val:]
        tl += [y] * (len(files) - n_val)
    return FolderSplit(tr, tl), FolderSplit(vf, vl)


# ---- decoding -------------------------------------------------------------------------------


class BadImage(Exception):
    pass


def _to_array(img: Image.Image, channels: int) -> np.ndarray:
    """Any PIL mode -> uint8 array (H, W, channels)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img).astype(np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") else max(float(a.max()), 1.0)
        if img.mode == "I" and a.max() <= 255:
            hi = 255.0
        a = np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        img = Image.fromarray(a)
    if channels == 1:
        img = img.convert("L")
    else:
        img = img.convert("RGB")  # palette, alpha (dropped), CMYK, greyscale -> RGB
    a = np.asarray(img, dtype=np.uint8)
    return a[:, :, None] if a.ndim == 2 else a


def set_max_image_pixels(n: int) -> None:
    """The bound for datasets created from now on (each carries it into its worker processes)."""
    global MAX_PIXELS
    MAX_PIXELS = n


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation (phones store portrait JPEGs sideways with a rotation tag)."""
    if img.getexif().get(0x0112, 1) in (1, None):
        return img
    return ImageOps.exif_transpose(img)


def buffer_side(base: int, max_aspect: float) -> int:
    """The side of the square buffer that holds an image of shorter side `base` in either orientation."""
    return max(base, round(base * max_aspect))


def _centre_offsets(nw: int, nh: int, base: int, side: int) -> tuple[int, int]:
    """Top-left corner of the kept window (up to side x side): placed so that the window's own centre
    base x base square is exactly the square the evaluation decode keeps."""
    def off(n: int) -> int:
        if n <= side:
            return 0
        return min(max(0, (n - base) // 2 - (side - base) // 2), n - side)
    return off(nw), off(nh)


def decode(path: Path, base: int, channels: int, max_pixels: int | None = None,
           max_aspect: float | None = None) -> np.ndarray:
    """Decode and resize the shorter side to `base` -> uint8 (C, h, w): the base x base centre square,
    or with `max_aspect` the whole image, its longer side centre-cropped to round(base * max_aspect)."""
    return decode_whole(path, base, channels, max_pixels, max_aspect)[0]


def decode_whole(path: Path, base: int, channels: int, max_pixels: int | None = None,
                 max_aspect: float | None = None) -> tuple[np.ndarray, bool]:
    """decode(), and whether the longer side was cut to the bound."""
    max_pixels = max_pixels or MAX_PIXELS
    cut = False
    try:
        with Image.open(path) as img:
            w, h = img.size
            if w * h > max_pixels:  # read from the header, before anything is decoded
                raise BadImage(f"{path}: {w}x{h} = {w * h:,} pixels, over --max-image-pixels {max_pixels:,} "
                               f"(it would decode to about {w * h * 3 / 1e9:.1f} GB); raise that option to use it")
            img.draft("RGB" if channels == 3 else "L", (base, base))  # JPEG: decode at reduced size
            img.load()
            img = _upright(img)
            w, h = img.size
            if w < 1 or h < 1:
                raise BadImage(f"{path}: empty image ({w}x{h})")
            scale = base / min(w, h)
            nw, nh = max(base, round(w * scale)), max(base, round(h * scale))
            img = _normalise_mode(img)
            img = img.resize((nw, nh), Image.BICUBIC, reducing_gap=3.0)
            if max_aspect is None:
                left, top = (nw - base) // 2, (nh - base) // 2
                img = img.crop((left, top, left + base, top + base))
            else:
                side = buffer_side(base, max_aspect)
                left, top = _centre_offsets(nw, nh, base, side)
                cut = nw > side or nh > side
                if cut:
                    img = img.crop((left, top, left + min(nw, side), top + min(nh, side)))
            a = _to_array(img, channels)
    except BadImage:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise BadImage(f"{path}: {type(e).__name__}: {e}") from None
    return a.transpose(2, 0, 1).copy(), cut  # writable and contiguous


def _normalise_mode(img: Image.Image) -> Image.Image:
    """Modes PIL cannot resize well are converted first (palette, 1-bit, CMYK, alpha)."""
    if img.mode in ("P", "PA"):
        return img.convert("RGBA").convert("RGB")
    if img.mode == "1":
        return img.convert("L")
    if img.mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBA", "RGBX", "RGBa"):
        return img.convert("RGB")
    if img.mode in ("LA", "La"):
        return img.convert("L")
    if img.mode in ("I;16B", "I;16L", "I;16N"):
        return img.convert("I")
    return img


def guess_channels(files: list[Path], sample: int = 200) -> int:
    """1 if a sample of the images is all greyscale, else 3."""
    step = max(1, len(files) // sample)
    for p in files[::step][:sample]:
        try:
            with Image.open(p) as img:
                if img.mode not in GREY_MODES:
                    if img.mode == "P" and _palette_is_grey(img):
                        continue
                    return 3
        except Exception:  # noqa: BLE001 - a bad file is reported when it is decoded
            continue
    return 1


def _palette_is_grey(img: Image.Image) -> bool:
    pal = img.getpalette() or []
    rgb = np.array(pal[: 3 * 256]).reshape(-1, 3)
    return bool((rgb[:, 0] == rgb[:, 1]).all() and (rgb[:, 1] == rgb[:, 2]).all())


def in_buffer(a: np.ndarray, side: int, cut: bool = False) -> tuple[torch.Tensor, tuple[int, int], bool]:
    """(C, h, w) -> ((C, side, side) with the image at the top left and its edges repeated, (h, w),
    whether its longer side was cut)."""
    _, h, w = a.shape
    if h == side and w == side:
        return torch.from_numpy(a), (h, w), cut
    return torch.from_numpy(np.pad(a, ((0, 0), (0, side - h), (0, side - w)), mode="edge")), (h, w), cut


class DecodedImages(torch.utils.data.Dataset):
    """Decodes file i to uint8 (C, base, base), or with `max_aspect` to ((C, side, side) buffer,
    (h, w) extent). A file that fails is replaced by the next good one (so batches keep their size)
    and reported in the second item of the result."""

    def __init__(self, files: list[Path], base: int, channels: int, strict: bool = False, substitute: bool = True,
                 max_aspect: float | None = None):
        self.files = files
        self.base = base
        self.channels = channels
        self.strict = strict
        self.substitute = substitute  # False: a bad file gives None (used when caching)
        self.max_pixels = MAX_PIXELS  # captured here so that spawned workers get the same bound
        self.max_aspect = max_aspect

    def __len__(self) -> int:
        return len(self.files)

    def load(self, i: int):
        """(image or None, index of the file actually decoded, messages of files that failed)."""
        bad = []
        for j in range(len(self.files)):
            k = (i + j) % len(self.files)
            try:
                a, cut = decode_whole(self.files[k], self.base, self.channels, self.max_pixels, self.max_aspect)
                if self.max_aspect is None:
                    return torch.from_numpy(a), k, tuple(bad)
                return in_buffer(a, buffer_side(self.base, self.max_aspect), cut), k, tuple(bad)
            except BadImage as e:
                if self.strict:
                    raise UserError(f"bad image (--strict): {e}") from None
                bad.append(str(e))
                if not self.substitute:
                    return None, i, tuple(bad)
        raise UserError(f"none of the {len(self.files)} files could be decoded; first error: {bad[0]}")

    def __getitem__(self, i: int):
        image, _, bad = self.load(i)
        return image, bad


class IndexedImages(DecodedImages):
    """For evaluation: a bad file is dropped (never replaced), and each item carries its index so
    labels can follow the images that were kept."""

    def __init__(self, files, base, channels):
        super().__init__(files, base, channels, strict=False, substitute=False)

    def __getitem__(self, i: int):
        return self.load(i)


def collate_decoded(items):
    """Streaming batches: (uint8 images, messages of files that were replaced); images kept whole
    come as StoredImages (buffer and extents)."""
    bad = [b for _, bads in items for b in bads]
    if isinstance(items[0][0], tuple):
        images = torch.stack([x[0] for x, _ in items])
        extents = torch.tensor([x[1] for x, _ in items], dtype=torch.long)
        return StoredImages(images, extents), bad
    return torch.stack([x for x, _ in items]), bad


def collate_indexed(items):
    """Evaluation batches: (uint8 images of the good files, their indices, messages of bad files)."""
    kept = [(x, i) for x, i, _ in items if x is not None]
    bad = [b for _, _, bads in items for b in bads]
    images = torch.stack([x for x, _ in kept]) if kept else None
    return images, torch.tensor([i for _, i in kept], dtype=torch.long), bad


def collate_keep_none(items):
    return items


def warn_bad(messages: list[str]) -> None:
    for m in messages:
        warn(f"skipped unreadable image {m}")
