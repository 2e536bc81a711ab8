"""unmasked: pretrain Vision Transformer encoders (MAE, LUT, DINOv2-style) and measure what any ViT learned."""

__version__ = "0.1.0"
