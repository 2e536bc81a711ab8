"""Plain helpers the tests import (`from tests.helpers import tiny_config`); fixtures stay in conftest.py."""

import torch

import unmasked.train.loop as loop
from unmasked.build import build_objective
from unmasked.config import PretrainConfig, resolve_defaults, validate
from unmasked.models import MAEDecoder, build_encoder, encoder_spec
from unmasked.objectives import LUT, MAE


def tiny_config(tmp_path, **overrides) -> PretrainConfig:
    """A model small enough that a few optimiser steps take well under a second on a CPU."""
    base = dict(
        objective="lut", data="fashion-mnist", out=str(tmp_path / "run"), model="vit_tiny", width=32, depth=2,
        heads=2, decoder_width=32, decoder_depth=1, decoder_heads=2, proj_hidden=64, subset=256, batch_size=32,
        epochs=2, warmup_epochs=0.5, log_every=2, num_workers=0, device="cpu",
        precision="fp32",  # not auto: the same numbers on a CPU with fast bf16 and on one without
    )
    base.update(overrides)
    return PretrainConfig.flat(**base)  # options of another objective (the decoder for DINOv2) are ignored


# small heads for DINOv2 (other objectives ignore these options)
SMALL_HEADS = dict(dino_heads_k=64, dino_head_hidden=32, dino_head_bottleneck=16, dino_local_crops=2)


def tiny_registered(tmp_path, name: str, seed: int = 0):
    """(resolved config, objective) of any registered objective, 28 px, 1 channel, tiny, seeded."""
    cfg = resolve_defaults(tiny_config(tmp_path, objective=name, img_size=28, patch_size=4, **SMALL_HEADS), True)
    cfg.in_chans, cfg.mean, cfg.std = 1, [0.5], [0.25]
    validate(cfg)
    torch.manual_seed(seed)
    obj = build_objective(cfg)
    obj.set_step_values({k: s[0] for k, s in obj.schedules(10, 5).items()})
    return cfg, obj


def tiny_objective(kind: str, depth: int = 2, hidden_dim: int = 64):
    """A 28 px, 1-channel LUT or MAE objective small enough for unit tests (seeded)."""
    torch.manual_seed(0)
    enc = build_encoder(encoder_spec("vit_tiny", 28, 4, 1, embed_dim=48, depth=depth, num_heads=3))
    dec = MAEDecoder(7, 48, 32, 1, 2, 16)
    return LUT(enc, dec, hidden_dim=hidden_dim) if kind == "lut" else MAE(enc, dec)


class PretrainCalled(Exception):
    """Raised by `capture_pretrain`'s stand-in, so a CLI test stops before any training."""


def capture_pretrain(monkeypatch) -> dict:
    """Replace `train.loop.pretrain` by a stand-in that records the config and keywords the CLI
    passes (`seen["cfg"]`, `seen["explicit"]`, ...) and raises PretrainCalled."""
    seen = {}

    def fake_pretrain(cfg, **kw):
        seen.update(cfg=cfg, **kw)
        raise PretrainCalled

    monkeypatch.setattr(loop, "pretrain", fake_pretrain)
    return seen
