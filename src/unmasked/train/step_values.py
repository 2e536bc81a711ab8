"""The values every optimiser step needs, as schedules: lr, weight decay, EMA momentum, the
last-layer freeze and whatever the objective schedules itself (e.g. a teacher temperature).

The loop asks `at(step)` and applies the result; it never knows which objective it runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from unmasked.train.schedules import Schedule, constant, cosine, lr_schedule, momentum_schedule


@dataclass
class StepSchedules:
    lr: Schedule
    weight_decay: Schedule
    ema_momentum: Schedule
    freeze_last_layer_steps: int = 0
    objective: dict[str, Schedule] = field(default_factory=dict)

    @classmethod
    def for_run(cls, cfg, objective, total_steps: int, steps_per_epoch: int) -> StepSchedules:
        warmup = round(cfg.warmup_epochs * steps_per_epoch)
        wd = (constant(cfg.weight_decay, total_steps) if cfg.weight_decay_end is None
              else cosine(cfg.weight_decay, cfg.weight_decay_end, total_steps))
        return cls(
            lr=lr_schedule(cfg.peak_lr(), total_steps, warmup, cfg.min_lr),
            weight_decay=wd,
            ema_momentum=momentum_schedule(cfg.ema_momentum, total_steps),
            freeze_last_layer_steps=int(objective.freeze_last_layer_steps(steps_per_epoch)),
            objective=dict(objective.schedules(total_steps, steps_per_epoch)),
        )

    def objective_values(self, step: int) -> dict[str, float]:
        return {name: float(s[step]) for name, s in self.objective.items()}

    def frozen_last_layer(self, step: int) -> bool:
        return step < self.freeze_last_layer_steps
