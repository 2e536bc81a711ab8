import os

import pytest
import torch

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
