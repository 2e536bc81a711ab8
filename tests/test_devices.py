"""--device strings: what they resolve to, and the errors for the ones that cannot work."""

import pytest
import torch

from unmasked.devices import resolve_device
from unmasked.errors import UserError


def test_cpu_and_auto_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.parametrize("arg,match", [("gpu", "not a device"), ("meta", "unsupported device type"),
                                       ("cuda", "CUDA is not available"), ("cuda:1", "CUDA is not available")])
def test_bad_devices_name_the_value(monkeypatch, arg, match):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match=match):
        resolve_device(arg)


def test_bare_cuda_gets_an_index(monkeypatch):
    """torch.cuda.set_device refuses a device without an index, so every cuda device gets one."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)  # torchrun's LOCAL_RANK
    assert resolve_device("cuda:1", local_rank=1) == torch.device("cuda", 1)
    with pytest.raises(UserError, match="LOCAL_RANK"):  # every rank on one GPU would fail in NCCL
        resolve_device("cuda:1", local_rank=0)
    with pytest.raises(UserError, match="2 CUDA device"):
        resolve_device("cuda:2")


def test_auto_precision_is_bf16_where_the_gpu_has_it_else_fp16(monkeypatch):
    from unmasked.devices import autocast_dtype, resolve_precision

    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", cuda) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # V100, T4
    assert resolve_precision("auto", cuda) == "fp16"
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", cuda) == "bf16" and resolve_precision("fp16", torch.device("cpu")) == "fp16"
    assert autocast_dtype("fp16") is torch.float16 and autocast_dtype("bf16") is torch.bfloat16
    assert autocast_dtype("fp32") is None
