"""What every objective provides to the training loop."""

from __future__ import annotations

import torch
import torch.nn as nn

from unmasked.data.augment import AugmentSpec
from unmasked.rng import BatchRandom


class Objective(nn.Module):
    """A pretraining objective: views in, (loss, metrics) out.

    `student` holds every trained module (it is what DDP wraps and the optimiser updates);
    `teacher` (optional) is updated by `update_teacher` after each optimiser step and is never
    wrapped by DDP. `student_call` is what the forward pass calls: the student itself, or a
    DDP / compiled wrapper of it installed by the training loop; `teacher_call` likewise for the
    teacher (compiled, never DDP).
    """

    name: str = ""

    def __init__(self):
        super().__init__()
        self.__dict__["_student_call"] = None
        self.__dict__["_teacher_call"] = None
        self.teacher: nn.Module | None = None

    @property
    def encoder(self):
        return self.student.encoder

    def set_student_call(self, fn) -> None:
        self.__dict__["_student_call"] = fn

    def student_call(self, *args, **kwargs):
        fn = self.__dict__["_student_call"]
        return (self.student if fn is None else fn)(*args, **kwargs)

    def set_teacher_call(self, fn) -> None:
        self.__dict__["_teacher_call"] = fn

    def teacher_call(self, *args, **kwargs):
        fn = self.__dict__["_teacher_call"]
        return (self.teacher if fn is None else fn)(*args, **kwargs)

    def view_specs(self, base: AugmentSpec) -> list[AugmentSpec]:
        raise NotImplementedError

    def forward(self, views: list[torch.Tensor], rng: BatchRandom) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """EMA step; objectives without a teacher do nothing."""
