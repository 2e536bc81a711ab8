"""unmasked: masked image modeling pretraining (MAE, LUT) for Vision Transformers."""

__version__ = "0.1.0"
