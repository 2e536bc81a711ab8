"""Square data must give the batches it gave before images kept their aspect ratio.

The hashes were recorded from the augmentation before the whole-image decode existed: each
objective's views of a seeded batch of Fashion-MNIST-sized (28 px) and folder-sized (square
64 px, 3 channels) images, and the training batches the loader hands over.
"""

import hashlib

import pytest
import torch

from tests.data.helpers import class_folder
from unmasked.build import augment_spec, build_objective
from unmasked.config import PretrainConfig, resolve_defaults
from unmasked.data.augment import BatchAugment
from unmasked.data.dataset import Split, load_data
from unmasked.data.loader import TrainBatches
from unmasked.rng import BatchRandom


def _digest(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _views(objective: str, fashion: bool, crop: str | None = None):
    kw = dict(objective=objective, data="fashion-mnist", out="/tmp/unused", model="vit_tiny", width=32, depth=1,
              heads=2, decoder_width=32, decoder_depth=1, decoder_heads=2, device="cpu", crop=crop)
    if objective == "lut":
        kw["proj_hidden"] = 64
    if not fashion:
        kw.update(img_size=56, patch_size=8)
    cfg = resolve_defaults(PretrainConfig.flat(**kw), fashion)
    c = 1 if fashion else 3
    cfg.mean, cfg.std, cfg.in_chans = [0.5] * c, [0.25] * c, c
    torch.manual_seed(0)
    specs = build_objective(cfg).view_specs(augment_spec(cfg))
    s = 28 if fashion else 64
    images = torch.randint(0, 256, (8, c, s, s), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    rng = BatchRandom(7, 11, 0, 8)
    return [BatchAugment(sp)(images, rng) for sp in specs]


EXPECTED = {
    ("mae", True, None): "6e1d88565fd3fba4",
    ("lut", True, None): "d47d577c08256761",
    ("dinov2", True, None): "fb57c01e7ba2b903",
    ("mae", False, "rrc"): "96d8a5ca53d4308a",
    ("lut", False, "pad"): "3e960c9c1b76634c",
    ("dinov2", False, None): "73f3c8180380d452",
    ("mae", False, "none"): "9db04fe38b446d85",
}


@pytest.mark.parametrize("key", list(EXPECTED), ids=lambda k: f"{k[0]}-{'fm' if k[1] else 'folder'}-{k[2]}")
def test_square_views_are_bit_identical_to_before(key):
    assert _digest(_views(*key)) == EXPECTED[key]


def test_square_training_batches_are_bit_identical_to_before():
    images = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    tb = TrainBatches(Split(images=images, labels=torch.zeros(64, dtype=torch.long)), 16, 2, torch.device("cpu"),
                      seed=3)
    batches = list(tb.epoch(1, 1))
    assert len(batches) == 6
    assert _digest(batches) == "884e5ce86024f279"


def test_square_folder_decodes_to_the_same_images(tmp_path):
    root = class_folder(tmp_path / "sq", per_class=4, size=(80, 80))
    ds = load_data(str(root), base_size=64, progress=False)
    assert ds.train.images.shape == (6, 3, 64, 64)
    assert _digest([ds.train.images, ds.heldout.images]) == "1ce4fad195e6cc98"
