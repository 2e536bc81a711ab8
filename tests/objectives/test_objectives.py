import copy

import pytest
import torch

from unmasked.data.augment import AugmentSpec
from unmasked.models import MAEDecoder, build_encoder, encoder_spec
from unmasked.objectives import LUT, MAE
from unmasked.rng import BatchRandom


def _parts(width=32):
    enc = build_encoder(encoder_spec("vit_tiny", 28, 4, 1, embed_dim=width, depth=2, num_heads=2))
    dec = MAEDecoder(grid=7, embed_dim=width, decoder_dim=32, depth=1, num_heads=2, patch_dim=16)
    return enc, dec


def _views(n=2, b=6):
    torch.manual_seed(1)
    return [torch.randn(b, 1, 28, 28) for _ in range(n)]


def test_lut_teacher_holds_encoder_and_projector_only():
    lut = LUT(*_parts(), hidden_dim=64)
    names = {n.split(".")[0] for n, _ in lut.teacher.named_parameters()}
    assert names == {"encoder", "projector"}
    assert all(not p.requires_grad for p in lut.teacher.parameters())


def test_ema_update_values():
    lut = LUT(*_parts(), hidden_dim=64)
    with torch.no_grad():
        for p in lut.student.parameters():
            p.fill_(1.0)
        for p in lut.teacher.parameters():
            p.fill_(3.0)
    lut.update_teacher(0.9)
    for p in lut.teacher.parameters():
        assert torch.allclose(p, torch.full_like(p, 0.9 * 3.0 + 0.1 * 1.0))
    lut.update_teacher(1.0)  # momentum 1 leaves the teacher unchanged
    for p in lut.teacher.parameters():
        assert torch.allclose(p, torch.full_like(p, 2.8))


def test_lut_loss_is_mae_plus_weighted_global_term_and_only_student_learns():
    lut = LUT(*_parts(), hidden_dim=64, weight=0.25)
    loss, parts = lut(_views(), BatchRandom(0, 0, 0, 6))
    assert torch.allclose(loss, parts["loss_mae"] + 0.25 * parts["loss_lut"])
    loss.backward()
    assert all(p.grad is not None for p in lut.student.parameters() if p.requires_grad)
    assert all(p.grad is None for p in lut.teacher.parameters())


def test_lut_fused_views_equal_separate_calls():
    enc, dec = _parts()
    fused = LUT(enc, dec, hidden_dim=64, fuse_views=True)
    separate = copy.deepcopy(fused)
    separate.fuse_views = False
    views = _views()
    a, pa = fused(views, BatchRandom(0, 3, 0, 6))
    b, pb = separate(views, BatchRandom(0, 3, 0, 6))
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(pa["loss_lut"], pb["loss_lut"], atol=1e-5)


def test_mae_loss_and_views():
    mae = MAE(*_parts())
    loss, parts = mae(_views(1), BatchRandom(0, 0, 0, 6))
    assert loss.ndim == 0 and torch.isfinite(loss)
    spec = AugmentSpec(img_size=28, mean=(0.5,), std=(0.5,))
    assert [s.color for s in mae.view_specs(spec)] == [False]
    assert [s.color for s in LUT(*_parts(), hidden_dim=64).view_specs(spec)] == [False, True]


def test_lut_constructor_refuses_low_mask_ratio():
    with pytest.raises(ValueError, match=">= 0.5"):
        LUT(*_parts(), mask_ratio=0.4, hidden_dim=64)
