"""Pretraining objectives: one small module each, registered here (one line per objective)."""

from unmasked.objectives import lut, mae
from unmasked.objectives.base import Objective
from unmasked.objectives.lut import LUT
from unmasked.objectives.mae import MAE
from unmasked.objectives.registry import ObjectiveEntry, register

register(mae.ENTRY)
register(lut.ENTRY)

__all__ = ["Objective", "ObjectiveEntry", "MAE", "LUT", "register"]
