"""The EMA teacher update, written once for every objective with a teacher (lightly's
`update_momentum`): teacher = m * teacher + (1 - m) * student.

The pairing contract: every parameter and buffer of the teacher has a namesake in the student
(the teacher is a deep copy of some of the student's modules, under the same attribute names), so
`ema_pairs(teacher, student)` matches them by name. Parameters are averaged. Floating-point
buffers (BatchNorm running statistics) are averaged with `average_buffers` (a teacher that uses
them, in eval mode), else copied; integer buffers (batch counters) are always copied.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

# How the average is computed: one multi-tensor lerp (what training runs), one lerp per tensor
# (bench's plain path), or the published loop's mul_ + add_ per tensor (bench's reference path).
KERNELS = ("foreach", "per-tensor", "published")


@dataclass
class EmaPairs:
    """Matching teacher and student tensors: those averaged, then those copied."""

    teacher: list[torch.Tensor] = field(default_factory=list)
    student: list[torch.Tensor] = field(default_factory=list)
    copy_teacher: list[torch.Tensor] = field(default_factory=list)
    copy_student: list[torch.Tensor] = field(default_factory=list)


def ema_pairs(teacher: nn.Module, student: nn.Module, average_buffers: bool = True) -> EmaPairs:
    """The teacher's parameters and buffers with the student's of the same name."""
    theirs = dict(student.named_parameters())
    theirs_buf = dict(student.named_buffers())
    pairs = EmaPairs()
    for name, t in teacher.named_parameters():
        pairs.teacher.append(t)
        pairs.student.append(_namesake(theirs, name, t))
    for name, t in teacher.named_buffers():
        s = _namesake(theirs_buf, name, t)
        if average_buffers and t.is_floating_point():
            pairs.teacher.append(t)
            pairs.student.append(s)
        else:
            pairs.copy_teacher.append(t)
            pairs.copy_student.append(s)
    return pairs


def _namesake(tensors: dict[str, torch.Tensor], name: str, mine: torch.Tensor) -> torch.Tensor:
    if name not in tensors:
        raise ValueError(f"EMA pairing: the teacher's {name!r} has no namesake in the student")
    if tensors[name].shape != mine.shape:
        raise ValueError(f"EMA pairing: the teacher's {name!r} has shape {tuple(mine.shape)}, the student's "
                         f"{tuple(tensors[name].shape)}")
    return tensors[name]


@torch.no_grad()
def update_momentum(pairs: EmaPairs, momentum: float, kernels: str = "foreach") -> None:
    """teacher = momentum * teacher + (1 - momentum) * student, in place; copied entries copied."""
    weight = 1.0 - momentum
    if kernels == "foreach":
        if pairs.teacher:  # a few multi-tensor kernels instead of one per tensor
            torch._foreach_lerp_(pairs.teacher, pairs.student, weight)
    elif kernels == "per-tensor":
        for t, s in zip(pairs.teacher, pairs.student):
            t.lerp_(s, weight)
    elif kernels == "published":  # three kernels per tensor, as the published per-parameter loop
        for t, s in zip(pairs.teacher, pairs.student):
            t.mul_(momentum).add_(weight * s.detach())
    else:
        raise ValueError(f"EMA kernels {kernels!r}: expected one of {', '.join(KERNELS)}")
    for t, s in zip(pairs.copy_teacher, pairs.copy_student):
        t.copy_(s)


__all__ = ["EmaPairs", "KERNELS", "ema_pairs", "update_momentum"]
