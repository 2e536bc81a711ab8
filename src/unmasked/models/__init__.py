from unmasked.models.decoder import MAEDecoder
from unmasked.models.heads import MLPHead
from unmasked.models.vit import PRESETS, EncoderSpec, ViTEncoder, build_encoder, encoder_spec

__all__ = ["MAEDecoder", "MLPHead", "PRESETS", "EncoderSpec", "ViTEncoder", "build_encoder", "encoder_spec"]
