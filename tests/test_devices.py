"""--device strings: what they resolve to, and the errors for the ones that cannot work."""

import pytest
import torch

from unmasked.devices import cpu_bf16_flags, resolve_device
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
    assert resolve_precision("bf16", cuda) == "bf16" and resolve_precision("fp16", torch.device("cpu")) == "fp16"
    assert autocast_dtype("fp16") is torch.float16 and autocast_dtype("bf16") is torch.bfloat16
    assert autocast_dtype("fp32") is None


def test_cuda_auto_precision_ignores_the_cpu_check(monkeypatch):
    import unmasked.devices as devices

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(devices, "cpu_bf16", lambda: pytest.fail("the CPU check runs for a CUDA device"))
    assert devices.choose_precision("auto", torch.device("cuda", 0)).name == "bf16"
    # a resumed CUDA run saved with 'auto' resolves as before: bf16 where the GPU has it
    assert devices.choose_precision("auto", torch.device("cuda", 0), saved_auto=True).name == "bf16"


def _cpu_with(monkeypatch, tmp_path, flags: list[str], speedup: float | None):
    """Mock the CPU's bf16 instructions and the timed product (its cache a fresh folder); returns the
    list of probe calls."""
    import unmasked.devices as devices

    monkeypatch.setenv("UNMASKED_CACHE", str(tmp_path / "probe-cache"))
    monkeypatch.setattr(devices, "cpu_bf16_flags", cpu_bf16_flags)  # the real one (conftest mocks it)
    calls = []

    def probe():
        calls.append(1)
        if speedup is None:
            pytest.fail("the timed product ran although the CPU has no bf16 instructions")
        return speedup

    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {f: f in flags for f in devices.CPU_BF16_FLAGS},
                        raising=False)
    monkeypatch.setattr(devices, "bf16_speedup", probe)
    return calls


CPU = torch.device("cpu")


def test_auto_is_bf16_on_a_cpu_with_fast_bf16(monkeypatch, tmp_path):
    from unmasked.devices import choose_precision, resolve_precision

    _cpu_with(monkeypatch, tmp_path, ["avx512_bf16"], speedup=4.2)
    choice = choose_precision("auto", CPU)
    assert choice.name == "bf16" and resolve_precision("auto", CPU) == "bf16"
    assert "AVX512-BF16" in choice.line() and "4.2x" in choice.line() and "bf16 autocast" in choice.line()


def test_auto_is_fp32_on_a_cpu_without_bf16_instructions(monkeypatch, tmp_path):
    from unmasked.devices import choose_precision

    calls = _cpu_with(monkeypatch, tmp_path, [], speedup=None)
    choice = choose_precision("auto", CPU)
    assert choice.name == "fp32" and "neither AVX-512 BF16 nor AMX" in choice.reason and not calls


def test_auto_is_fp32_where_the_timed_product_finds_bf16_slow(monkeypatch, tmp_path):
    from unmasked.devices import choose_precision

    _cpu_with(monkeypatch, tmp_path, ["amx_bf16", "avx512_bf16"], speedup=1.1)
    choice = choose_precision("auto", CPU)
    assert choice.name == "fp32" and "only 1.10x" in choice.reason


def test_explicit_precision_wins_over_the_cpu_check(monkeypatch, tmp_path):
    from unmasked.devices import choose_precision

    calls = _cpu_with(monkeypatch, tmp_path, ["amx_bf16"], speedup=8.0)
    assert choose_precision("fp32", CPU).name == "fp32"
    assert choose_precision("fp32", CPU).reason == "given by --precision"
    assert choose_precision("bf16", CPU, recorded=True).reason == "recorded in the run"
    assert not calls  # nothing was timed for an explicit precision


def test_a_run_saved_with_auto_resumes_in_fp32_on_a_cpu_with_fast_bf16(monkeypatch, tmp_path):
    """Before runs recorded their precision, 'auto' meant fp32 on every CPU: such a run resumes so."""
    from unmasked.devices import choose_precision

    _cpu_with(monkeypatch, tmp_path, ["avx512_bf16"], speedup=4.2)
    choice = choose_precision("auto", CPU, recorded=True, saved_auto=True)
    assert choice.name == "fp32" and "auto meant fp32" in choice.reason


def test_bad_precision_names_the_value():
    from unmasked.devices import choose_precision

    with pytest.raises(UserError, match="--precision 'bf32'.*auto, fp32, bf16, fp16"):
        choose_precision("bf32", CPU)


def test_bf16_flags_fall_back_to_proc_cpuinfo(monkeypatch, tmp_path):
    import unmasked.devices as devices

    monkeypatch.setattr(devices, "cpu_bf16_flags", cpu_bf16_flags)  # the real one (conftest mocks it)
    monkeypatch.delattr(torch.cpu, "get_capabilities", raising=False)  # an older torch
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n")
    monkeypatch.setattr(devices, "CPUINFO", info)
    assert devices.cpu_bf16_flags() == ["avx512_bf16"] and devices.cpu_model() == "Some CPU"
    info.write_text("model name\t: Other\nflags\t\t: fpu sse2 avx2\n")
    assert devices.cpu_bf16_flags() == []
    monkeypatch.setattr(devices, "CPUINFO", tmp_path / "missing")
    assert devices.cpu_bf16_flags() == []


def test_the_timed_product_is_cached_per_machine(monkeypatch, tmp_path):
    import json

    import unmasked.devices as devices

    calls = _cpu_with(monkeypatch, tmp_path, ["avx512_bf16"], speedup=3.0)
    assert devices.cached_bf16_speedup() == 3.0 and devices.cached_bf16_speedup() == 3.0
    assert len(calls) == 1  # measured once, then read back
    saved = json.loads(devices.probe_cache_file().read_text())
    (key,) = saved
    assert torch.__version__ in key and devices.cpu_model() in key and saved[key] == 3.0
    monkeypatch.setattr(torch, "__version__", "0.0-other")  # another torch: measured again
    assert devices.cached_bf16_speedup() == 3.0 and len(calls) == 2
    devices.probe_cache_file().write_text("not json")  # a damaged cache is measured again, not an error
    assert devices.cached_bf16_speedup() == 3.0 and len(calls) == 3


def test_the_timed_product_measures_and_leaves_the_global_rng_alone():
    from unmasked.devices import bf16_speedup

    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    ratio = bf16_speedup(n=32, seconds=0.0)
    assert ratio > 0 and torch.equal(torch.rand(3), expected)
