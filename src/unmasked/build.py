"""Build models and objectives from a resolved PretrainConfig."""

from __future__ import annotations

from unmasked.config import PretrainConfig
from unmasked.data.augment import AugmentSpec, default_blur_sigma
from unmasked.models import encoder_spec
from unmasked.models.vit import EncoderSpec
from unmasked.objectives import Objective


def spec_from_config(cfg: PretrainConfig) -> EncoderSpec:
    return encoder_spec(
        cfg.model, cfg.img_size, cfg.patch_size, cfg.in_chans,
        embed_dim=cfg.width, depth=cfg.depth, num_heads=cfg.heads, drop_path_rate=cfg.drop_path,
    )


def build_objective(cfg: PretrainConfig) -> Objective:
    from unmasked.objectives import registry

    return registry.get(cfg.objective).build(cfg)


def augment_spec(cfg: PretrainConfig) -> AugmentSpec:
    return AugmentSpec(
        img_size=cfg.img_size, mean=tuple(cfg.mean), std=tuple(cfg.std), crop=cfg.crop,
        rrc_scale=(cfg.crop_scale_min, 1.0), pad=cfg.pad, blur_sigma=default_blur_sigma(cfg.img_size),
    )


def model_name(cfg: PretrainConfig) -> str:
    spec = spec_from_config(cfg)
    custom = any(v is not None for v in (cfg.width, cfg.depth, cfg.heads))
    name = "vit" if custom else cfg.model
    return f"{name}/{spec.patch_size} ({spec.embed_dim}w x {spec.depth}d x {spec.num_heads}h, {spec.img_size} px)"
