"""What every objective provides to the training loop."""

from __future__ import annotations

import torch
import torch.nn as nn

from unmasked.data.augment import AugmentSpec
from unmasked.errors import UserError
from unmasked.rng import BatchRandom
from unmasked.train.ema import EmaPairs, ema_pairs


class Objective(nn.Module):
    """A pretraining objective: views in, (loss, metrics) out.

    `student` holds every trained module (it is what DDP wraps and the optimiser updates);
    `teacher` (optional) is updated by `update_teacher` after each optimiser step and is never
    wrapped by DDP. `student_call` is what the forward pass calls: the student itself, or a
    DDP / compiled wrapper of it installed by the training loop; `teacher_call` likewise for the
    teacher (compiled, never DDP).
    """

    name: str = ""
    ema_kernels = "foreach"  # how update_momentum averages (train/ema.py); bench's baselines change it
    # capabilities, read from the class by the CLI, bench, compare and the reports
    views: int = 1  # augmented views per image (by default)
    uses_teacher: bool = False  # keeps an EMA teacher (`update_teacher` does something)
    shared_crop: bool = True  # its views use --crop / --pad / --crop-scale-min
    # the fewest images a micro-batch may hold (BatchNorm or KoLeo need 2), and the option that
    # lifts the floor, if any: what --accum-steps auto respects and what its refusal names. The floor
    # counts the images of all processes (LUT's synchronised BatchNorm) unless it is per process
    # (DINOv2's KoLeo looks for neighbours among its own process's images only).
    min_micro_batch: int = 1
    micro_batch_floor_lift: str | None = None
    micro_batch_floor_per_process: bool = False

    @classmethod
    def reconstructs(cls) -> bool:
        """Has `reconstruct()` (reconstruction figures in analyze and compare)."""
        return callable(getattr(cls, "reconstruct", None))

    def __init__(self):
        super().__init__()
        self.__dict__["_student_call"] = None
        self.__dict__["_teacher_call"] = None
        self.__dict__["_ema_pairs"] = None
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

    def average_teacher_buffers(self) -> bool:
        """Whether the EMA averages the teacher's floating-point buffers (else copies them)."""
        return True

    def ema_pairs(self) -> EmaPairs:
        """The teacher's tensors paired with the student's by name (train/ema.py), made once."""
        if self.__dict__["_ema_pairs"] is None:
            self.__dict__["_ema_pairs"] = ema_pairs(self.teacher, self.student, self.average_teacher_buffers())
        return self.__dict__["_ema_pairs"]

    def _apply(self, fn, *args, **kwargs):
        self.__dict__["_ema_pairs"] = None  # parameters may be replaced by .to()/.cuda()
        return super()._apply(fn, *args, **kwargs)

    # -- per-step values the loop hands over (see unmasked.train.schedules) -----------------
    def schedules(self, total_steps: int, steps_per_epoch: int) -> dict:
        """Objective-specific per-step values, {name: Schedule}; the loop evaluates each at every
        optimiser step and passes the values to `set_step_values` before the forward pass."""
        return {}

    def set_step_values(self, values: dict[str, float]) -> None:
        self.__dict__["step_values"] = dict(values)

    def last_layer_params(self) -> list[nn.Parameter]:
        """Parameters the loop holds at lr 0 for the first `freeze_last_layer_steps` steps."""
        return []

    def freeze_last_layer_steps(self, steps_per_epoch: int) -> int:
        return 0

    def clip_gradients(self, max_norm: float) -> torch.Tensor:
        """Clip the student's gradient norm to `max_norm`; returns the norm before clipping."""
        return torch.nn.utils.clip_grad_norm_(self.student.parameters(), max_norm)

    def export_encoder(self) -> nn.Module:
        """The encoder that is exported and evaluated (default: the student's)."""
        return self.encoder

    export_network = "student"  # what encoder.json names as the exported network


def check_micro_batch(batch: int, accum: int, needs: str, lift: str | None = None, processes: int = 1) -> None:
    """Refuse, before anything is written, a --batch-size / --accum-steps that leaves one image per
    micro-batch (per process, for a floor that is per process: `processes` > 1 under torchrun) to an
    objective that `needs` two ("LUT's projector BatchNorm"), naming the options that work: fewer
    accumulation steps, a larger batch, or the option that lifts the floor."""
    if batch // accum // processes >= 2:
        return
    each = f" over {processes} processes" if processes > 1 else ""
    if batch >= 2 * processes:
        fix = f"use --accum-steps {batch // (2 * processes)} or fewer (micro-batches of 2 or more images{each})"
    else:
        fix = (f"use --batch-size {2 * processes} or more (with --accum-steps auto or an --accum-steps that leaves "
               f"2 or more{' per process' if processes > 1 else ''})")
    per = f" = {batch // accum // processes} per process ({processes} processes)" if processes > 1 else ""
    raise UserError(f"--batch-size {batch} / --accum-steps {accum} = {batch // accum} image per micro-batch{per}: "
                    f"{needs} needs at least 2 images per micro-batch{' on each process' if processes > 1 else ''}; "
                    f"{fix}{f', or {lift}' if lift else ''}")
