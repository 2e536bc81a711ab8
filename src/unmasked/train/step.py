"""One optimiser step, read top to bottom: the step's hyperparameters, forward and backward over
the micro-batches, the non-finite check, clipping, the optimiser step and the EMA teacher.

`optimiser_step` is the only implementation: the training loop calls it once per step and
`unmasked bench` times it, so what bench measures is what training runs.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from unmasked.notes import warn
from unmasked.rng import BatchRandom
from unmasked.train.compiling import mark_step_begin
from unmasked.train.distributed import all_mean
from unmasked.train.optim import set_step_hyperparameters

ViewMaker = Callable[[torch.Tensor, BatchRandom], list[torch.Tensor]]


@dataclass
class StepParts:
    """What a step needs, built once (by the loop from a run, by bench from synthetic data)."""

    objective: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedules: object  # StepSchedules: lr, weight decay, EMA momentum, objective values per step
    make_views: ViewMaker  # a micro-batch of images -> the objective's views
    accum_steps: int
    micro_batch: int
    seed: int
    device: torch.device
    env: object = None  # the DDP environment (rank, world, enabled); None for one process
    autocast_dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None  # fp16: scaled backward, unscaled before clipping
    clip_grad: float | None = None
    nan_skip: bool = False  # --nan skip: a non-finite loss skips the update (every rank alike)
    ddp: object = None  # the DDP wrapper, whose no_sync spares all-reduces between micro-batches
    compile_mode: str | None = None  # set when compiled: CUDA graphs need a step marker
    published_grad_norm: bool = False  # bench's reference: the per-parameter norm of every step


@dataclass
class StepOutput:
    loss: torch.Tensor  # detached, averaged over micro-batches
    parts: dict[str, torch.Tensor]
    data_wait_s: float  # wall time spent waiting for the micro-batches
    skipped: bool = False


def optimiser_step(p: StepParts, step: int, micro_batches: Iterator[torch.Tensor],
                   schedule_step: int | None = None) -> StepOutput:
    """One optimiser step at `step` (the random stream); `schedule_step` indexes the schedules
    when it differs (bench's steps run past the schedule's end)."""
    _set_step_values(p, step if schedule_step is None else schedule_step)
    if p.compile_mode is not None:
        mark_step_begin(p.compile_mode)
    out = _forward_backward(p, step, micro_batches)
    if p.nan_skip and not _all_finite(p, out.loss):
        p.optimizer.zero_grad(set_to_none=True)
        warn(f"step {step}: non-finite loss {out.loss.item()} ({_fmt_parts(out.parts)}); step "
             "skipped (--nan skip)")
        out.skipped = True
        return out
    _update(p, out.parts)
    p.objective.update_teacher(p.schedules.ema_momentum[step if schedule_step is None else schedule_step])
    return out


def _set_step_values(p: StepParts, i: int) -> None:
    s = p.schedules
    set_step_hyperparameters(p.optimizer, s.lr[i], s.weight_decay[i], s.frozen_last_layer(i))
    p.objective.set_step_values(s.objective_values(i))


def _forward_backward(p: StepParts, step: int, micro_batches: Iterator[torch.Tensor]) -> StepOutput:
    total = torch.zeros((), device=p.device)
    parts: dict[str, torch.Tensor] = {}
    rank, world = (p.env.rank, p.env.world) if p.env is not None else (0, 1)
    wait = 0.0
    for micro in range(p.accum_steps):
        t0 = time.perf_counter()
        images = next(micro_batches)
        wait += time.perf_counter() - t0
        rng = BatchRandom(p.seed, step, micro, p.micro_batch, p.device, rank, world)
        views = p.make_views(images, rng)
        last = micro == p.accum_steps - 1
        sync = contextlib.nullcontext() if (p.ddp is None or last) else p.ddp.no_sync()
        with sync:
            with torch.autocast(p.device.type, dtype=p.autocast_dtype or torch.float32,
                                enabled=p.autocast_dtype is not None):
                loss, metrics = p.objective(views, rng)
            scaled = loss / p.accum_steps
            (p.scaler.scale(scaled) if p.scaler is not None else scaled).backward()
        total += loss.detach() / p.accum_steps
        for k, v in metrics.items():
            parts[k] = parts.get(k, 0) + v / p.accum_steps
    return StepOutput(total, parts, wait)


def _all_finite(p: StepParts, loss: torch.Tensor) -> bool:
    finite = torch.isfinite(loss).all()
    if p.env is not None and p.env.enabled:  # every rank must make the same decision
        return bool(all_mean(p.env, finite.float()) == 1.0)
    return bool(finite.item())


def _update(p: StepParts, parts: dict[str, torch.Tensor]) -> None:
    """Clip (after unscaling), step (the scaler skips a step whose fp16 gradients overflowed)."""
    if p.scaler is not None:
        p.scaler.unscale_(p.optimizer)
    params = p.objective.student.parameters()
    if p.clip_grad is not None:
        parts["grad_norm"] = p.objective.clip_gradients(p.clip_grad)  # DINOv2 clips per module
    elif p.published_grad_norm:  # computed for the log at every step, one norm per parameter
        grads = [q.grad.detach() for q in params if q.grad is not None]
        torch.norm(torch.stack([torch.norm(g, 2.0) for g in grads]), 2.0)
    if p.scaler is not None:
        p.scaler.step(p.optimizer)
        p.scaler.update()
    else:
        p.optimizer.step()
    p.optimizer.zero_grad(set_to_none=True)


def _fmt_parts(parts: dict) -> str:
    return ", ".join(f"{k}={float(v):.4g}" for k, v in parts.items()) or "no parts"


__all__ = ["StepOutput", "StepParts", "optimiser_step"]
