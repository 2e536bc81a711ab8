import os

import pytest
import torch

from unmasked.config import PretrainConfig
from unmasked.data import fashion_mnist

torch.set_num_threads(min(2, os.cpu_count() or 1))


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
    )
    base.update(overrides)
    return PretrainConfig(**base)
