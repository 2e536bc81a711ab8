"""Pretraining objectives: one small module each, built by `build_objective`."""

from unmasked.objectives.base import Objective
from unmasked.objectives.lut import LUT
from unmasked.objectives.mae import MAE

OBJECTIVES = {"mae": MAE, "lut": LUT}

__all__ = ["Objective", "MAE", "LUT", "OBJECTIVES"]
