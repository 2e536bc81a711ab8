"""The one EMA update (train/ema.py): pairing by name, buffers, the three kernel choices."""

import copy

import pytest
import torch
from torch import nn

from unmasked.train.ema import ema_pairs, update_momentum


def _student():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))


def _teacher_of(student):
    teacher = copy.deepcopy(student).requires_grad_(False)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(1.0)
        teacher[1].running_mean.fill_(3.0)
    student[1].running_mean.fill_(1.0)
    student[1].num_batches_tracked.fill_(7)
    return teacher


def test_parameters_and_float_buffers_are_averaged_integer_buffers_copied():
    s = _student()
    t = _teacher_of(s)
    before = [p.clone() for p in t.parameters()]
    update_momentum(ema_pairs(t, s), 0.9)
    for b, p, q in zip(before, t.parameters(), s.parameters()):
        assert torch.allclose(p, 0.9 * b + 0.1 * q)
    assert torch.allclose(t[1].running_mean, torch.full((8,), 2.8))
    assert t[1].num_batches_tracked.item() == 7


def test_without_buffer_averaging_buffers_are_copied():
    s = _student()
    t = _teacher_of(s)
    update_momentum(ema_pairs(t, s, average_buffers=False), 0.9)
    assert torch.equal(t[1].running_mean, s[1].running_mean)


def test_the_kernel_choices_compute_the_same_average():
    results = {}
    for kernels in ("foreach", "per-tensor", "published"):
        s = _student()
        t = _teacher_of(s)
        update_momentum(ema_pairs(t, s), 0.99, kernels)
        results[kernels] = [p.clone() for p in t.state_dict().values()]
    for a, b in zip(results["foreach"], results["per-tensor"]):
        assert torch.equal(a, b)  # one lerp, batched or not
    for a, b in zip(results["foreach"], results["published"]):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)
    with pytest.raises(ValueError, match="EMA kernels 'fast'"):
        update_momentum(ema_pairs(t, s), 0.9, "fast")


def test_momentum_one_leaves_the_teacher_and_a_teacher_needs_namesakes():
    s = _student()
    t = _teacher_of(s)
    params = [p.clone() for p in t.parameters()]
    update_momentum(ema_pairs(t, s, average_buffers=True), 1.0)
    assert all(torch.equal(a, b) for a, b in zip(params, t.parameters()))
    with pytest.raises(ValueError, match="no namesake in the student"):
        ema_pairs(nn.ModuleDict({"head": nn.Linear(4, 2)}), s)
    with pytest.raises(ValueError, match=r"shape \(2, 4\), the student's \(8, 4\)"):
        ema_pairs(nn.Sequential(nn.Linear(4, 2)), s)


@pytest.mark.parametrize("kind", ["lut", "dinov2"])
def test_objective_teachers_use_it_and_follow_a_move(kind):
    from unmasked.build import build_objective
    from unmasked.config import resolve_defaults

    from ..helpers import tiny_config

    cfg = resolve_defaults(tiny_config(__import__("pathlib").Path("unused"), objective=kind, dino_heads_k=32,
                                       dino_head_hidden=32, dino_head_bottleneck=16), True)
    cfg.in_chans, cfg.mean, cfg.std = 1, [0.5], [0.25]
    obj = build_objective(cfg)
    pairs = obj.ema_pairs()
    assert pairs is obj.ema_pairs()  # made once
    assert len(pairs.teacher) >= len(list(obj.teacher.parameters()))
    teacher = copy.deepcopy(obj.teacher.state_dict())
    obj.update_teacher(1.0)
    assert all(torch.equal(v, obj.teacher.state_dict()[k]) for k, v in teacher.items())
    obj.to(torch.float64)  # a move may replace the tensors: the pairs are made again
    assert obj.ema_pairs() is not pairs
    with torch.no_grad():
        for p in obj.student.parameters():
            p.add_(1.0)
    obj.update_teacher(0.0)
    s = dict(obj.student.named_parameters())
    assert all(torch.equal(p, s[n]) for n, p in obj.teacher.named_parameters())
