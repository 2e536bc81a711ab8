"""Build models and objectives from a resolved PretrainConfig."""

from __future__ import annotations

from unmasked.config import PretrainConfig
from unmasked.data.augment import AugmentSpec, default_blur_sigma
from unmasked.models.vit import spec_from_config
from unmasked.objectives import Objective, registry

__all__ = ["spec_from_config", "build_objective", "augment_spec", "model_name"]


def build_objective(cfg: PretrainConfig) -> Objective:
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
