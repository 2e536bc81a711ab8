import pytest
import torch
import torchvision.transforms.v2.functional as TF

from unmasked.data.augment import (
    AugmentSpec,
    BatchAugment,
    _rrc_boxes,
    adjust_hue,
    adjust_saturation,
    eval_view,
    gaussian_blur,
    pad_crop,
    solarize,
)
from unmasked.rng import BatchRandom


def _images(b=8, c=1, s=28):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (b, c, s, s), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("crop", ["rrc", "pad", "none"])
@pytest.mark.parametrize("color", [False, True])
def test_views_shape_and_determinism(crop, color):
    spec = AugmentSpec(img_size=28, mean=(0.5,), std=(0.25,), crop=crop, color=color)
    aug = BatchAugment(spec)
    x = _images()
    a = aug(x, BatchRandom(1, 2, 0, 8))
    b = aug(x, BatchRandom(1, 2, 0, 8))
    c = aug(x, BatchRandom(1, 3, 0, 8))
    assert a.shape == (8, 1, 28, 28) and a.dtype == torch.float32
    assert torch.equal(a, b)
    if crop != "none" or color:
        assert not torch.equal(a, c)
    assert a.min() >= (0 - 0.5) / 0.25 - 1e-5 and a.max() <= (1 - 0.5) / 0.25 + 1e-5


def test_rank_rows_match_single_process_rows():
    """Process r of W augments its images exactly as a 1-process run augments those positions."""
    spec = AugmentSpec(img_size=28, mean=(0.5,), std=(0.25,), crop="rrc", color=True)
    aug = BatchAugment(spec)
    x = _images(8)
    full = aug(x, BatchRandom(5, 1, 0, 8))
    for rank in range(2):
        part = aug(x[rank::2], BatchRandom(5, 1, 0, 8, rank=rank, world=2))
        assert torch.allclose(part, full[rank::2], atol=1e-6)


def test_pad_crop_windows_are_reflect_padded_crops():
    x = torch.rand(4, 1, 28, 28)
    rng = BatchRandom(0, 0, 0, 4)
    out = pad_crop(x, rng, 28, 4)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4), mode="reflect")
    off = BatchRandom(0, 0, 0, 4).randint(9, 2)
    for i in range(4):
        oy, ox = off[i].tolist()
        assert torch.equal(out[i], padded[i, :, oy : oy + 28, ox : ox + 28])


def test_rrc_boxes_inside_image_with_area_in_range():
    rng = BatchRandom(0, 0, 0, 256)
    x0, y0, w, h = _rrc_boxes(rng, 28, 28, (0.2, 1.0), (3 / 4, 4 / 3))
    assert torch.all(x0 >= 0) and torch.all(y0 >= 0)
    assert torch.all(x0 + w <= 28) and torch.all(y0 + h <= 28)
    area = w * h / (28 * 28)
    assert area.min() >= 0.15 and area.max() <= 1.0


def test_rrc_full_box_without_flip_is_identity():
    from unmasked.data.augment import random_resized_crop

    class FullBox(BatchRandom):
        def uniform(self, *shape, low=0.0, high=1.0):
            # scale 1, ratio 1 (log 0), position 0
            return torch.full((self.local_size, *shape), high if high == 1.0 and low != 0.0 else 0.0)

    x = torch.rand(2, 1, 16, 16)
    rng = FullBox(0, 0, 0, 2)
    out = random_resized_crop(x, rng, 16, (1.0, 1.0), (1.0, 1.0), torch.zeros(2, dtype=torch.bool))
    assert torch.allclose(out, x, atol=1e-5)


def test_hue_and_saturation_match_torchvision():
    x = torch.rand(3, 3, 8, 8)
    for f in (-0.1, 0.05):
        ours = adjust_hue(x, torch.full((3,), f))
        ref = torch.stack([TF.adjust_hue(x[i], f) for i in range(3)])
        assert torch.allclose(ours, ref, atol=1e-4)
    ours = adjust_saturation(x, torch.full((3,), 0.7))
    ref = torch.stack([TF.adjust_saturation(x[i], 0.7) for i in range(3)])
    assert torch.allclose(ours, ref, atol=1e-5)


def test_blur_keeps_constant_images_and_smooths_noise():
    x = torch.full((2, 1, 16, 16), 0.3)
    assert torch.allclose(gaussian_blur(x, torch.tensor([0.5, 2.0]), 5), x, atol=1e-6)
    noise = torch.rand(2, 1, 16, 16)
    assert gaussian_blur(noise, torch.tensor([2.0, 2.0]), 5).std() < noise.std()


def test_eval_view_centre_crop():
    x = torch.arange(32 * 32, dtype=torch.uint8).reshape(1, 1, 32, 32) % 251
    v = eval_view(x, 28, (0.0,), (1.0,), crop_pct=28 / 32)
    assert v.shape == (1, 1, 28, 28)
    assert torch.allclose(v[0, 0], x[0, 0, 2:30, 2:30].float() / 255)


def _dino_spec(**kw):
    base = dict(img_size=28, mean=(0.5,) * 3, std=(0.25,) * 3, crop="rrc", color_dino=True, jitter_p=0.0,
                grayscale_p=0.0)
    base.update(kw)
    return AugmentSpec(**base)


def test_dino_photometry_with_every_probability_zero_is_the_plain_crop():
    x = _images(c=3)
    plain = BatchAugment(_dino_spec(color_dino=False))(x, BatchRandom(0, 1, 0, 8))
    assert torch.equal(BatchAugment(_dino_spec())(x, BatchRandom(0, 1, 0, 8)), plain)


def test_dino_grayscale_blur_and_solarize_apply_with_their_probabilities():
    x = _images(b=64, c=3)
    grey = BatchAugment(_dino_spec(grayscale_p=1.0))(x, BatchRandom(0, 1, 0, 64))
    assert torch.allclose(grey[:, 0], grey[:, 1]) and torch.allclose(grey[:, 1], grey[:, 2])
    plain = BatchAugment(_dino_spec())(x, BatchRandom(0, 1, 0, 64))
    solar = BatchAugment(_dino_spec(solarize_p=1.0))(x, BatchRandom(0, 1, 0, 64))
    assert torch.allclose(solar, solarize(plain * 0.25 + 0.5) * 4 - 2, atol=1e-5)
    for p in (0.1, 0.5):
        blurred = BatchAugment(_dino_spec(blur_p=p))(x, BatchRandom(0, 1, 0, 64))
        changed = (blurred != plain).flatten(1).any(dim=1).float().mean().item()
        assert abs(changed - p) < 0.2
    with pytest.raises(ValueError, match="one photometry"):
        _dino_spec(color=True)


def test_local_crops_have_their_own_output_size():
    out = BatchAugment(_dino_spec(img_size=12, rrc_scale=(0.1, 0.4)))(_images(c=3), BatchRandom(0, 1, 0, 8))
    assert out.shape == (8, 3, 12, 12)
