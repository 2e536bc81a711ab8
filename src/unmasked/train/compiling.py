"""torch.compile for an objective: the student's call (possibly DDP-wrapped) and the teacher's.

Both are compiled because small models are launch-bound: an eager teacher forward would keep half
of a LUT step's kernel launches. The loss stays eager, so the tensors the loop keeps for logging
are never outputs of a CUDA graph (a later replay would overwrite them).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from unmasked.config import COMPILE_MODES
from unmasked.objectives.base import Objective


def uses_cuda_graphs(mode: str) -> bool:
    """reduce-overhead and max-autotune replay CUDA graphs (on CUDA devices)."""
    return mode in COMPILE_MODES and mode != "default"


def compile_objective(objective: Objective, student_call, mode: str = "default") -> None:
    """Install compiled student and teacher calls on `objective`."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode {mode!r}: expected one of {', '.join(COMPILE_MODES)}")
    kw = {} if mode == "default" else {"mode": mode}
    objective.set_student_call(torch.compile(student_call, **kw))
    if objective.teacher is not None:
        objective.set_teacher_call(torch.compile(objective.teacher, **kw))


def mark_step_begin(mode: str) -> None:
    """Tell CUDA-graph trees that a new training step starts, so the previous step's graph
    outputs may be reused; without it they infer iterations and can refuse a replay."""
    if uses_cuda_graphs(mode):
        torch.compiler.cudagraph_mark_step_begin()


@contextmanager
def eager_calls(objective: Objective):
    """Run the objective's uncompiled modules inside the block (e.g. to count FLOPs: a CUDA-graph
    replay never passes through the dispatcher, so a FLOP counter would see none of its work)."""
    saved = objective.__dict__["_student_call"], objective.__dict__["_teacher_call"]
    objective.set_student_call(None)
    objective.set_teacher_call(None)
    try:
        yield objective
    finally:
        objective.set_student_call(saved[0])
        objective.set_teacher_call(saved[1])
