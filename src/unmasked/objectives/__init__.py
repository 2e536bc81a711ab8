"""Pretraining objectives: one small module each, registered here (one line per objective)."""

from unmasked.objectives import dinov2, lut, mae
from unmasked.objectives.base import Objective
from unmasked.objectives.dinov2 import DINOv2
from unmasked.objectives.lut import LUT
from unmasked.objectives.mae import MAE
from unmasked.objectives.registry import ObjectiveEntry, register

register(mae.ENTRY)
register(lut.ENTRY)
register(dinov2.ENTRY)

__all__ = ["Objective", "ObjectiveEntry", "MAE", "LUT", "DINOv2", "register"]
