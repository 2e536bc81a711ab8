"""Training crops see the whole image: aspect ratio kept at decode, crops over each image's extent."""

import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from tests.data.helpers import class_folder
from unmasked.data import image_folder
from unmasked.data.augment import (
    AugmentSpec,
    BatchAugment,
    StoredImages,
    _rrc_boxes_within,
    pad_crop_within,
)
from unmasked.data.dataset import load_data
from unmasked.data.loader import TrainBatches
from unmasked.rng import BatchRandom


def _coded(h: int, w: int, side: int) -> StoredImages:
    """One h x w image whose channel 0 is its column index and channel 1 its row index, in a side x
    side buffer, edges repeated (as the decoder stores it)."""
    col = np.broadcast_to(np.arange(w, dtype=np.uint8)[None, :], (h, w))
    row = np.broadcast_to(np.arange(h, dtype=np.uint8)[:, None], (h, w))
    a = np.stack([col, row, np.zeros((h, w), np.uint8)])
    buf, ext, _ = image_folder.in_buffer(np.ascontiguousarray(a), side)
    return StoredImages(buf[None], torch.tensor([ext]))


def test_decode_keeps_4_3_whole_and_cuts_2_1_to_the_bound(tmp_path):
    Image.new("RGB", (640, 480), (10, 20, 30)).save(tmp_path / "photo.jpg")
    a, cut = image_folder.decode_whole(tmp_path / "photo.jpg", 48, 3, max_aspect=4 / 3)
    assert a.shape == (3, 48, 64) and not cut
    Image.new("RGB", (100, 200)).save(tmp_path / "tall.png")
    a, cut = image_folder.decode_whole(tmp_path / "tall.png", 48, 3, max_aspect=4 / 3)
    assert a.shape == (3, 64, 48) and cut
    a, cut = image_folder.decode_whole(tmp_path / "tall.png", 48, 3, max_aspect=2.0)
    assert a.shape == (3, 96, 48) and not cut


def test_the_centre_square_of_a_whole_image_is_the_square_decode(tmp_path, capsys):
    root = tmp_path / "mixed"
    for i, size in enumerate([(128, 64), (64, 128), (81, 61), (61, 81), (50, 50), (97, 40)]):
        rng = np.random.default_rng(i)
        p = root / ("a" if i % 2 else "b") / f"{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(p)
    square = load_data(str(root), base_size=32, progress=False, val_fraction=0.01)
    capsys.readouterr()
    whole = load_data(str(root), base_size=32, progress=False, val_fraction=0.01, keep_aspect=True)
    long = [line.removeprefix("unmasked: note: ") for line in capsys.readouterr().err.splitlines()
            if "longer than 4:3" in line]
    sizes = [Image.open(f).size for f in whole.train_files]
    n_long = sum(max(z) > 4 / 3 * min(z) for z in sizes)
    assert n_long > 0 and len(long) == 1 and long[0].startswith(f"{n_long} of 4 training images")  # said once
    ext = whole.train.extents
    assert ext is not None and ext.min(dim=1).values.eq(32).all() and ext.max() <= 43  # shorter side 32, up to 4:3
    assert whole.train.images.shape[-2:] == tuple(ext.max(dim=0).values.tolist())  # trimmed to what is used
    assert torch.equal(whole.train.squares(0, len(whole.train)), square.train.images)
    assert whole.heldout.extents is None and torch.equal(whole.heldout.images, square.heldout.images)


def test_square_folder_kept_whole_is_the_square_tensor(tmp_path):
    root = class_folder(tmp_path / "sq", per_class=4, size=(80, 80))
    a = load_data(str(root), base_size=64, progress=False)
    b = load_data(str(root), base_size=64, progress=False, keep_aspect=True)
    assert b.train.extents is None and torch.equal(a.train.images, b.train.images)


def test_random_resized_crops_cover_the_whole_width_of_a_2_1_image():
    h, w = 32, 64
    e = torch.tensor([[h, w]] * 4000, dtype=torch.float32)
    x0, y0, cw, ch = _rrc_boxes_within(BatchRandom(0, 0, 0, 4000), e[:, 0], e[:, 1], (0.08, 1.0), (3 / 4, 4 / 3))
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + cw <= w).all() and (y0 + ch <= h).all()
    assert x0.min() == 0 and (x0 + cw).max() == w and (x0 + cw / 2).max() > 0.9 * w
    area = cw * ch / (h * w)  # scale is relative to the whole image
    # a 2:1 image holds boxes of ratio <= 4:3 up to 32 x 43 (0.67 of it), as torchvision's get_params
    assert 0.6 < area.max() <= 43 * 32 / (h * w) and area.min() < 0.1
    # and the pixels do come from the whole width: the column code of the views spans 0..63
    spec = AugmentSpec(img_size=16, mean=(0.0,) * 3, std=(1 / 255,) * 3, crop="rrc", rrc_scale=(0.08, 1.0),
                       flip=False)
    stored = _coded(h, w, 64)
    seen = torch.zeros(w, dtype=torch.bool)
    for s in range(300):
        v = BatchAugment(spec)(stored, BatchRandom(0, s, 0, 1))
        seen[v[0, 0].round().long().clamp(0, w - 1).unique()] = True
        assert v[0, 1].max() <= h - 1 + 0.5  # never the buffer below the image
    assert seen.all()


def test_lut_translations_span_the_long_side():
    h, w, size, pad = 32, 64, 32, 4
    stored = _coded(h, w, 64)
    spec = AugmentSpec(img_size=size, mean=(0.0,) * 3, std=(1 / 255,) * 3, crop="pad", pad=pad, flip=False)
    xs, ys = set(), set()  # the window's offsets in the padded image
    for s in range(400):
        v = BatchAugment(spec)(stored, BatchRandom(0, s, 0, 1))
        xs.add(round(float(v[0, 0, 0, size // 2])) - (size // 2 - pad))
        ys.add(round(float(v[0, 1, size // 2, 0])) - (size // 2 - pad))
    assert xs == set(range(w + 2 * pad - size + 1))  # 0..40: the whole padded long side
    assert ys == set(range(2 * pad + 1))  # 0..8, as RandomCrop(padding=4) on the short side


def test_pad_crop_reflects_at_the_image_edge_not_the_buffer():
    """Every window is RandomCrop(32, padding=4, reflect) of the 32 x 48 image itself: its columns
    are the image's, reflected at x = 0 and x = 47 without repeating the edge (as F.pad's
    'reflect'), never the buffer's repeated columns beyond the image."""
    w, size, pad = 48, 32, 4

    def reflected(ox):
        return [abs(j) if j < w else 2 * (w - 1) - j for j in range(ox - pad, ox - pad + size)]

    offsets = set()
    for s in range(120):
        v = pad_crop_within(_coded(32, w, 64), BatchRandom(0, s, 0, 1), size, pad) * 255
        cols = v[0, 0, 0].round().long().tolist()
        match = [ox for ox in range(w + 2 * pad - size + 1) if cols == reflected(ox)]
        assert len(match) == 1, cols
        offsets.add(match[0])
    assert {0, w + 2 * pad - size} <= offsets  # both ends drawn: [4, 3, 2, 1, 0, 1, ...] and [..., 46, 47, 46, ...]


def test_dinov2_global_and_local_crops_cover_the_whole_width_of_a_2_1_image():
    """DINOv2's own crops (global 0.32-1, local 0.05-0.32 of the whole image, photometry off to
    read the pixels' column codes) draw from the whole width, never from below the image."""
    from dataclasses import replace

    from unmasked.objectives.dino.options import DINOv2Options, resolve_options
    from unmasked.objectives.dinov2 import DINOv2

    h, w = 32, 64
    o = resolve_options(DINOv2Options(dino_heads_k=8, dino_head_hidden=16, dino_head_bottleneck=8,
                                      dino_local_crops=1, dino_local_size=8), 16, 4, epochs=10, small=False)
    assert (o.dino_global_scale_min, o.dino_local_scale_min, o.dino_local_scale_max) == (0.32, 0.05, 0.32)
    base = AugmentSpec(img_size=16, mean=(0.0,) * 3, std=(1 / 255,) * 3)
    specs = DINOv2.view_specs(SimpleNamespace(options=o), base)
    assert [s.crop for s in specs] == ["rrc"] * 3 and [s.img_size for s in specs] == [16, 16, 8]
    stored = _coded(h, w, 64)
    for spec in (specs[0], specs[2]):
        spec = replace(spec, color_dino=False, flip=False)
        seen = torch.zeros(w, dtype=torch.bool)
        for s in range(300):
            v = BatchAugment(spec)(stored, BatchRandom(0, s, 0, 1))
            seen[v[0, 0].round().long().clamp(0, w - 1).unique()] = True
            assert v[0, 1].max() <= h - 1 + 0.5
        assert seen.all(), spec.img_size


def test_the_cache_rule_counts_whole_images_at_the_buffer_side(tmp_path):
    """--cache-gb counts a training image kept whole at side x side (round(base x 4/3) squared) and a
    held-out one at the evaluation square: just below that total the folder is streamed, and the
    buffer is trimmed to one orientation only when the copy fits beside the count."""
    root = tmp_path / "photos"
    for i in range(10):
        p = root / ("a" if i % 2 else "b") / f"{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (48, 36), (i, 2 * i, 3 * i)).save(p)
    probe = load_data(str(root), base_size=24, progress=False, keep_aspect=True)
    n_train, n_held = len(probe.train), len(probe.heldout)
    assert probe.train.in_memory and probe.train.images.shape[1:] == (3, 24, 32)  # trimmed to landscape
    side = image_folder.buffer_side(24, 4 / 3)
    total = 3 * (n_train * side**2 + n_held * 24**2)
    fits = load_data(str(root), base_size=24, progress=False, keep_aspect=True, cache_gb=total / 1e9)
    # no room beside the count for the trimmed copy (both exist while it is made): kept side x side
    assert fits.train.in_memory and fits.train.images.shape[1:] == (3, side, side)
    assert fits.train.extents.tolist() == [[24, 32]] * n_train
    assert torch.equal(fits.train.squares(0, n_train), probe.train.squares(0, n_train))
    room = load_data(str(root), base_size=24, progress=False, keep_aspect=True,
                     cache_gb=(total + 3 * n_train * 24 * 32) / 1e9)
    assert room.train.images.shape[1:] == (3, 24, 32) and torch.equal(room.train.images, probe.train.images)
    short = load_data(str(root), base_size=24, progress=False, keep_aspect=True, cache_gb=(total - 1) / 1e9)
    assert not short.train.in_memory and short.train.max_aspect == 4 / 3


def test_lut_resize_then_crop_when_the_shorter_side_is_not_the_model_size():
    stored = _coded(32, 64, 64)
    v = pad_crop_within(stored, BatchRandom(0, 0, 0, 1), 16, 4)
    assert v.shape == (1, 3, 16, 16)


def test_a_folder_of_one_4_3_shape_is_cropped_not_stretched(tmp_path):
    """Every photo 48 x 36: the buffer is exactly their shape, yet they keep their extents, so LUT's
    view is Resize + RandomCrop over the long side and the evaluation squares are centre squares
    (a full but non-square buffer taking the square path would stretch 4:3 to 1:1)."""
    root = class_folder(tmp_path / "photos", per_class=4, size=(48, 36))
    ds = load_data(str(root), base_size=24, progress=False, keep_aspect=True)
    square = load_data(str(root), base_size=24, progress=False)
    assert ds.train.images.shape[1:] == (3, 24, 32) and ds.train.extents.tolist() == [[24, 32]] * len(ds.train)
    assert torch.equal(ds.train.squares(0, len(ds.train)), square.train.images)
    (batch,) = list(TrainBatches(ds.train, 6, 1, torch.device("cpu"), base_size=24, channels=3).epoch(0))
    assert isinstance(batch, StoredImages) and not batch.full
    spec = AugmentSpec(img_size=24, mean=(0.0,) * 3, std=(1 / 255,) * 3, crop="pad", pad=4, flip=False)
    assert torch.allclose(BatchAugment(spec)(batch, BatchRandom(0, 0, 0, 6)),
                          pad_crop_within(batch, BatchRandom(0, 0, 0, 6), 24, 4) * 255, atol=1e-3)
    coded = _coded(24, 32, 32)
    stored = StoredImages(coded.images[:, :, :24, :32].contiguous(), coded.extents)  # fills a 24 x 32 buffer
    assert not stored.full
    xs = {round(float(BatchAugment(spec)(stored, BatchRandom(0, s, 0, 1))[0, 0, 0, 12])) - 8 for s in range(200)}
    assert xs == set(range(32 + 8 - 24 + 1))  # the window travels the whole long side: 0..16


def test_training_batches_carry_each_images_extent(tmp_path):
    root = tmp_path / "wide"
    for i in range(8):
        p = root / ("a" if i % 2 else "b") / f"{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64 if i % 3 else 48, 48), (i, i, i)).save(p)
    for cache_gb in (8.0, 0.0):  # in memory, and streamed from the files
        ds = load_data(str(root), base_size=24, progress=False, val_fraction=0.01, keep_aspect=True,
                       cache_gb=cache_gb)
        tb = TrainBatches(ds.train, 6, 1, torch.device("cpu"), base_size=24, channels=3)
        (batch,) = list(tb.epoch(0))
        assert isinstance(batch, StoredImages) and batch.short == 24
        assert set(map(tuple, batch.extents.tolist())) == {(24, 32), (24, 24)}
        out = BatchAugment(AugmentSpec(img_size=16, mean=(0.5,) * 3, std=(0.25,) * 3, crop="pad"))(
            batch, BatchRandom(0, 0, 0, 6))
        assert out.shape == (6, 3, 16, 16)


@pytest.mark.parametrize("crop", ["rrc", "pad", "none"])
def test_a_full_buffer_takes_the_square_path(crop):
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    aug = BatchAugment(AugmentSpec(img_size=24, mean=(0.5,) * 3, std=(0.25,) * 3, crop=crop))
    stored = StoredImages(images, torch.tensor([[32, 32]] * 4))
    assert stored.full and torch.equal(aug(stored, BatchRandom(1, 2, 0, 4)), aug(images, BatchRandom(1, 2, 0, 4)))


@pytest.mark.parametrize("objective,crop", [("mae", "rrc"), ("lut", "pad"), ("dinov2", None)])
def test_pretraining_on_4_3_photos_then_fine_tuning(tmp_path, objective, crop):
    from tests.helpers import tiny_config
    from unmasked.cli import main
    from unmasked.train.loop import pretrain

    data = class_folder(tmp_path / "photos", per_class=6, size=(48, 36))  # 4:3
    extra = {"dino_local_crops": 2, "dino_local_size": 16} if objective == "dinov2" else {}
    cfg = tiny_config(tmp_path, objective=objective, data=str(data), subset=None, batch_size=4, img_size=32,
                      patch_size=8, crop=crop, steps=2, knn_every=1, **extra)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the small-image and upscaling notices
        summary = pretrain(cfg, progress=False)
    assert summary["steps"] == 2
    assert cfg.base_size == (32 if crop == "pad" else 37)  # Resize(32) for LUT's crop, 32 / 0.875 otherwise
    if objective == "lut":
        assert main(["eval", "finetune", str(tmp_path / "run"), "--no-progress", "--train-batch", "4",
                     "--epochs", "1", "--num-workers", "0", "--device", "cpu", "--lr-rule", "lut"]) == 0
