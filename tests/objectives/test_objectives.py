import copy

import pytest
import torch

from tests.helpers import tiny_config
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


def test_lut_teacher_stays_in_eval_mode_unless_asked():
    lut = LUT(*_parts(), hidden_dim=64)
    lut.train()
    assert lut.student.training and all(m.training for m in lut.student.modules())
    assert not any(m.training for m in lut.teacher.modules())
    byol = LUT(*_parts(), hidden_dim=64, teacher_mode="train").train()
    assert all(m.training for m in byol.teacher.modules())
    with pytest.raises(ValueError, match="teacher_mode"):
        LUT(*_parts(), hidden_dim=64, teacher_mode="frozen")


def test_ema_averages_batchnorm_statistics_and_copies_counters():
    lut = LUT(*_parts(), hidden_dim=64)
    s_bn, t_bn = lut.student.projector[1], lut.teacher.projector[1]
    with torch.no_grad():
        s_bn.running_mean.fill_(1.0)
        t_bn.running_mean.fill_(3.0)
        s_bn.running_var.fill_(2.0)
        t_bn.running_var.fill_(4.0)
        s_bn.num_batches_tracked.fill_(7)
    lut.update_teacher(0.9)
    assert torch.allclose(t_bn.running_mean, torch.full_like(t_bn.running_mean, 2.8))
    assert torch.allclose(t_bn.running_var, torch.full_like(t_bn.running_var, 3.8))
    assert t_bn.num_batches_tracked.item() == 7
    lut.ema_kernels = "per-tensor"  # the per-tensor path averages the same entries
    lut.update_teacher(0.5)
    assert torch.allclose(t_bn.running_mean, torch.full_like(t_bn.running_mean, 1.9))

    byol = LUT(*_parts(), hidden_dim=64, teacher_mode="train")
    with torch.no_grad():
        byol.student.projector[1].running_mean.fill_(1.0)
        byol.teacher.projector[1].running_mean.fill_(3.0)
    byol.update_teacher(0.9)  # a train-mode teacher never uses them: copied
    assert torch.equal(byol.teacher.projector[1].running_mean, byol.student.projector[1].running_mean)


def test_eval_teacher_projection_uses_running_statistics():
    """With running statistics the teacher's projection of one image does not depend on the batch."""
    lut = LUT(*_parts(), hidden_dim=64).train()
    x1, x2 = _views()
    from unmasked.models.patches import patchify

    p1, p2 = patchify(x1, 4), patchify(x2, 4)
    t_full, _ = lut.teacher(p1, p2)
    t_half, _ = lut.teacher(p1[:3], p2[:3])
    assert torch.allclose(t_full[:3], t_half, atol=1e-5)


def test_projector_and_predictor_are_xavier_uniform():
    lut = LUT(*_parts(), hidden_dim=64)
    for head in (lut.student.projector, lut.student.predictor):
        for layer in (head[0], head[3]):
            fan_out, fan_in = layer.weight.shape
            bound = (6.0 / (fan_in + fan_out)) ** 0.5
            assert layer.weight.abs().max() <= bound
            assert layer.weight.abs().max() > 0.9 * bound  # not torch's narrower Kaiming default


def test_lut_scales_its_lr_by_its_authors_sqrt_rule_unless_told(tmp_path):
    """LUT's default lr rule is its code's base_lr x sqrt(batch) / 4 (6e-4 at batch 256 from 1.5e-4);
    a typed --lr-scaling linear is kept, and MAE keeps its linear rule."""
    lut = tiny_config(tmp_path, objective="lut", batch_size=256, base_lr=1.5e-4)
    assert lut.lr_scaling == "sqrt" and lut.peak_lr() == pytest.approx(6e-4)
    typed = tiny_config(tmp_path, objective="lut", batch_size=256, base_lr=1.5e-4, lr_scaling="linear")
    assert typed.peak_lr() == pytest.approx(1.5e-4)
    mae = tiny_config(tmp_path, objective="mae", batch_size=256, base_lr=1.5e-4)
    assert mae.lr_scaling == "linear" and mae.peak_lr() == pytest.approx(1.5e-4)
