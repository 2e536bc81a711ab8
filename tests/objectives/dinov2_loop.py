"""A hand-written DINOv2 training loop for tests: what the plug-in loop will do, spelled out.

Per step: the teacher temperature from `schedules()` via `set_step_values`, one forward per view
set, AdamW with the prototype layer at lr 0 while `step < freeze_last_layer_steps`, gradient
clipping at 3.0, then `update_teacher` with the cosine EMA momentum (which also folds the
step's teacher outputs into the centres).
"""

from __future__ import annotations

import pytest
import torch

from unmasked.data.augment import AugmentSpec, BatchAugment
from unmasked.models import encoder_spec
from unmasked.objectives.dino.options import DINOv2Options, resolve_options
from unmasked.objectives.dinov2 import DINOv2
from unmasked.rng import BatchRandom
from unmasked.train.schedules import momentum_schedule


@pytest.fixture
def one_thread():
    """Training tests on one thread: two threads on a busy 2-core machine measured 17x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_dinov2(width=48, depth=2, k=256, local_crops=2, **overrides) -> DINOv2:
    torch.manual_seed(0)
    fields = dict(dino_heads_k=k, dino_head_hidden=128, dino_head_bottleneck=64, dino_local_crops=local_crops)
    fields.update(overrides)
    o = resolve_options(DINOv2Options(**fields), 28, 4, epochs=4, small=True)
    return DINOv2(encoder_spec("vit_tiny", 28, 4, 1, embed_dim=width, depth=depth, num_heads=3), o)


class HandLoop:
    def __init__(self, obj: DINOv2, total_steps: int, steps_per_epoch: int, batch: int, lr: float = 1e-3,
                 seed: int = 0, ema_start: float = 0.996):
        self.obj, self.batch, self.seed = obj, batch, seed
        last = {id(p) for p in obj.last_layer_params()}
        params = [p for p in obj.student.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW([
            {"params": [p for p in params if id(p) not in last], "lr": lr},
            {"params": [p for p in params if id(p) in last], "lr": lr},
        ], lr=lr, weight_decay=0.04)
        self.lr = lr
        self.schedules = obj.schedules(total_steps, steps_per_epoch)
        self.freeze = obj.freeze_last_layer_steps(steps_per_epoch)
        self.momenta = momentum_schedule(ema_start, total_steps)
        self.augs = [BatchAugment(s) for s in obj.view_specs(AugmentSpec(img_size=28, mean=(0.286,), std=(0.353,)))]

    def step(self, step: int, images: torch.Tensor) -> tuple[float, dict]:
        obj = self.obj
        obj.train()
        rng = BatchRandom(self.seed, step, 0, images.shape[0])
        views = [a(images, rng) for a in self.augs]
        obj.set_step_values({k: s[step] for k, s in self.schedules.items()})
        self.opt.param_groups[1]["lr"] = 0.0 if step < self.freeze else self.lr
        loss, metrics = obj(views, rng)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(obj.student.parameters(), 3.0)
        self.opt.step()
        obj.update_teacher(float(self.momenta[step]))
        return loss.item(), {k: v.item() for k, v in metrics.items()}
