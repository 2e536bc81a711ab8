import os

import pytest
import torch

from unmasked.config import PretrainConfig
from unmasked.data import fashion_mnist

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def _pixel_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("unmasked-cache")


@pytest.fixture(autouse=True)
def _private_cache(_pixel_cache, monkeypatch):
    """Raw-pixel results go to a folder of this test session, never to the user's cache."""
    monkeypatch.setenv("UNMASKED_CACHE", str(_pixel_cache))


@pytest.fixture(autouse=True)
def _cpu_without_fast_bf16(monkeypatch):
    """--precision auto resolves as on a CPU without bf16 instructions (fp32), whatever this machine
    has, so that every test gives the same numbers everywhere; tests of the choice mock it."""
    from unmasked import devices

    monkeypatch.setattr(devices, "cpu_bf16_flags", lambda: [])


@pytest.fixture(scope="session")
def fm_root():
    """Fashion-MNIST IDX files (Debian's dataset-fashion-mnist); CI installs it."""
    try:
        return fashion_mnist.locate()
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"Fashion-MNIST is required for this test: {e}")


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
    from unmasked.build import build_objective
    from unmasked.config import resolve_defaults, validate

    cfg = resolve_defaults(tiny_config(tmp_path, objective=name, img_size=28, patch_size=4, **SMALL_HEADS), True)
    cfg.in_chans, cfg.mean, cfg.std = 1, [0.5], [0.25]
    validate(cfg)
    torch.manual_seed(seed)
    obj = build_objective(cfg)
    obj.set_step_values({k: s[0] for k, s in obj.schedules(10, 5).items()})
    return cfg, obj


def tiny_objective(kind: str, depth: int = 2, hidden_dim: int = 64):
    """A 28 px, 1-channel LUT or MAE objective small enough for unit tests (seeded)."""
    from unmasked.models import MAEDecoder, build_encoder, encoder_spec
    from unmasked.objectives import LUT, MAE

    torch.manual_seed(0)
    enc = build_encoder(encoder_spec("vit_tiny", 28, 4, 1, embed_dim=48, depth=depth, num_heads=3))
    dec = MAEDecoder(7, 48, 32, 1, 2, 16)
    return LUT(enc, dec, hidden_dim=hidden_dim) if kind == "lut" else MAE(enc, dec)
