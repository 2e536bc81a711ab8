"""The recipe from the data: image folders of small images get the small-image recipe.

The published recipe (224 px, patch 16, ViT-B) upscales 28-px images eight times: 64 times the
compute and memory for no information. After the folder scan, the header of a sample of images
gives their typical size; when it is far below the input size and --img-size was not given, the
Fashion-MNIST recipe (ViT-Tiny, patch 4, 4 x 128 decoder, 40 epochs, pad crops) applies at the
images' own size. When --img-size was given, it is kept and a warning names the upscaling.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from unmasked.data import image_folder
from unmasked.data.dataset import is_fashion_mnist
from unmasked.notes import note, warn
from unmasked.objectives import registry

CENTRE_CROP_PCT = 0.875  # the evaluation view's 224 of 256
FAR_BELOW = 3  # images this many times smaller than the input size are upscaled for nothing
DEFAULT_IMG_SIZE = 224  # config.resolve_defaults' image-folder default
SMALL_PATCH = 4
SAMPLE = 32


def typical_side(files: list[Path], sample: int = SAMPLE) -> tuple[int | None, int]:
    """Median shorter side of an evenly spaced sample (headers only), and how many were read."""
    step = max(1, len(files) // sample)
    sides = []
    for path in files[::step][:sample]:
        try:
            with Image.open(path) as im:
                sides.append(min(im.size))
        except (OSError, UnidentifiedImageError, ValueError):
            continue  # the decoder names unreadable files later
    return (int(statistics.median(sides)) if sides else None), len(sides)


def small_images(cfg, quiet: bool = False) -> bool:
    """True when cfg.data is an image folder of images far below the input size and --img-size was
    not given; then cfg.img_size is set to their size (a multiple of the patch) and a warning says
    so. With --img-size given, warns about the upscaling and returns False. `quiet`: no note (a study
    checking its runs' configs)."""
    index = image_folder.scan(cfg.data, unlabeled=cfg.unlabeled)
    side, n = typical_side(index.train.files)
    if side is None:
        return False
    target = cfg.img_size or DEFAULT_IMG_SIZE
    if side * FAR_BELOW > target:
        return False
    about = f"the images in {cfg.data} are about {side} px (median shorter side of {n} sampled)"
    if cfg.img_size is not None:
        if not quiet:
            warn(f"{about}: --img-size {cfg.img_size} upscales them {cfg.img_size / side:.0f}x, at "
                 f"{(cfg.img_size / side) ** 2:.0f}x the compute; leave --img-size out for the small-image recipe")
        return False
    patch = cfg.patch_size or SMALL_PATCH
    cfg.img_size = max(patch, side // patch * patch)
    if not quiet:
        note(f"{about}, far below the {DEFAULT_IMG_SIZE} px default: using the small-image recipe (as on "
             f"Fashion-MNIST): --img-size {cfg.img_size} --patch-size {patch}, ViT-Tiny, a 4 x 128 decoder, "
             f"40 epochs, pad crops, unless given otherwise; pass --img-size to choose the size yourself")
    return True


def train_base_size(cfg) -> int:
    """The shorter side training images are decoded at (they keep their aspect ratio up to 4:3).

    LUT's reflect-pad crop (and 'none') is `Resize(img_size)` of the whole image: img_size. Views
    that RandomResizedCrop (MAE's, DINOv2's global and local crops, whatever --crop says for
    DINOv2) crop from the image at the evaluation view's base, img_size / 0.875 (256 for 224), so a
    crop of the whole image is downsampled to img_size, never upsampled from an img_size square."""
    if is_fashion_mnist(cfg.data):
        return 28
    rrc = cfg.crop == "rrc" or not registry.get(cfg.objective).objective.shared_crop
    return round(cfg.img_size / CENTRE_CROP_PCT) if rrc else cfg.img_size
