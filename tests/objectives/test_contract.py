"""The contract every registered objective keeps, checked over `registry.names()` (as timm tests
every registered model): a new objective is covered the moment it is registered."""

from __future__ import annotations

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from unmasked.build import augment_spec
from unmasked.data.augment import BatchAugment
from unmasked.objectives import registry
from unmasked.rng import BatchRandom
from unmasked.train.compiling import compile_objective

from ..helpers import tiny_registered

BATCH = 6


def tiny(tmp_path, name: str, seed: int = 0):
    return tiny_registered(tmp_path, name, seed)


def views(cfg, obj, step: int = 0):
    g = torch.Generator().manual_seed(step)
    images = torch.randint(0, 256, (BATCH, 1, 28, 28), dtype=torch.uint8, generator=g)
    rng = BatchRandom(cfg.seed, step, 0, BATCH)
    return [BatchAugment(s)(images, rng) for s in obj.view_specs(augment_spec(cfg))], rng


def teacher_state(obj) -> dict:
    """Parameters and floating-point buffers (integer batch counters are copied, not averaged)."""
    if obj.teacher is None:
        return {}
    return {k: v.clone() for k, v in obj.teacher.state_dict().items() if v.is_floating_point()}


@pytest.fixture(params=registry.names())
def name(request):
    return request.param


def test_scalar_loss_detached_metrics_and_gradients_only_where_they_belong(tmp_path, name):
    cfg, obj = tiny(tmp_path, name)
    obj.train()
    loss, metrics = obj(*views(cfg, obj))
    assert loss.ndim == 0 and loss.requires_grad and torch.isfinite(loss)
    assert metrics and all(not m.requires_grad and m.numel() == 1 for m in metrics.values()), metrics
    loss.backward()
    trainable = [(n, p) for n, p in obj.student.named_parameters() if p.requires_grad]
    assert trainable
    missing = [n for n, p in trainable if p.grad is None]
    assert not missing, f"{name}: no gradient reaches {missing}"
    if obj.teacher is not None:
        assert obj.uses_teacher
        assert all(p.grad is None and not p.requires_grad for p in obj.teacher.parameters())
    else:
        assert not obj.uses_teacher


def test_update_teacher_at_momentum_one_leaves_the_teacher_unchanged(tmp_path, name):
    cfg, obj = tiny(tmp_path, name)
    loss, _ = obj(*views(cfg, obj))
    loss.backward()
    with torch.no_grad():
        for p in obj.student.parameters():
            p.add_(1.0)  # the student moves; a momentum-1 teacher must not follow
    before = teacher_state(obj)
    obj.update_teacher(1.0)
    after = teacher_state(obj)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before), name


def test_state_dict_round_trips_into_a_fresh_objective(tmp_path, name):
    cfg, obj = tiny(tmp_path, name, seed=0)
    obj(*views(cfg, obj))[0].backward()
    obj.update_teacher(0.9)  # teacher and centres move off their initial values
    _, other = tiny(tmp_path, name, seed=1)
    other.load_state_dict(obj.state_dict())
    a, b = obj.state_dict(), other.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    obj.eval()
    other.eval()
    with torch.no_grad():
        assert torch.equal(obj(*views(cfg, obj, 3))[0], other(*views(cfg, other, 3))[0])


def test_export_loads_into_timm_strictly(tmp_path, name):
    _, obj = tiny(tmp_path, name)
    enc = obj.export_encoder()
    ref = VisionTransformer(**enc.spec.timm_kwargs())
    ref.load_state_dict(enc.state_dict(), strict=True)
    assert obj.export_network in ("student", "teacher")


def test_capabilities_are_read_from_the_class(tmp_path, name):
    cfg, obj = tiny(tmp_path, name)
    cls = registry.get(name).objective
    assert isinstance(obj, cls)
    assert cls.reconstructs() == callable(getattr(obj, "reconstruct", None))
    if cls.reconstructs():
        pred, mask, patches = obj.reconstruct(views(cfg, obj)[0][0], BatchRandom(0, 0, 0, BATCH))
        assert pred.shape == patches.shape and mask.mask.shape == patches.shape[:2]


def test_compiled_equals_eager(tmp_path, name):
    torch._dynamo.reset()
    cfg, eager = tiny(tmp_path, name)
    _, compiled = tiny(tmp_path, name)
    compile_objective(compiled, compiled.student)
    for obj in (eager, compiled):
        obj.eval()  # no drop path or BatchNorm batch statistics: the two must agree
    with torch.no_grad():
        want, _ = eager(*views(cfg, eager))
        got, _ = compiled(*views(cfg, compiled))
    torch._dynamo.reset()
    assert torch.allclose(want, got, rtol=1e-4, atol=1e-5), (name, want.item(), got.item())
