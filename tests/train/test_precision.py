"""--precision in a training run: what auto chooses on a CPU, what the run records and prints,
and the precision a resumed run keeps (runs saved before it was recorded included)."""

import json

import torch

import unmasked.devices as devices
from unmasked.devices import cpu_bf16_flags
from unmasked.train.checkpoint import load_checkpoint, save_checkpoint
from unmasked.train.loop import Pretrainer, pretrain

from ..helpers import tiny_config


def _fast_bf16_cpu(monkeypatch, tmp_path, speedup: float = 4.0):
    monkeypatch.setenv("UNMASKED_CACHE", str(tmp_path / "probe-cache"))
    monkeypatch.setattr(devices, "cpu_bf16_flags", cpu_bf16_flags)
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": True}, raising=False)
    monkeypatch.setattr(devices, "bf16_speedup", lambda: speedup)


def _precision_of(run_dir, **overrides) -> str:
    trainer = Pretrainer(tiny_config(run_dir.parent, **overrides), resume=True,
                         explicit={k for k in overrides if k == "precision"}, progress=False)
    try:
        return trainer.precision
    finally:
        trainer.close()


def test_auto_trains_in_bf16_on_a_cpu_with_fast_bf16_and_records_it(fm_root, tmp_path, monkeypatch, capsys):
    _fast_bf16_cpu(monkeypatch, tmp_path)
    summary = pretrain(tiny_config(tmp_path, objective="mae", precision="auto", steps=2), progress=False)
    assert summary["precision"] == "bf16"
    run = tmp_path / "run"
    assert json.loads((run / "config.json").read_text())["precision"] == "bf16"
    assert load_checkpoint(run / "checkpoint.pt")["config"]["precision"] == "bf16"
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "precision" in line]
    assert lines == ["unmasked: note: precision bf16 autocast (auto: this CPU has AVX512-BF16; a bf16 matrix "
                     "product ran 4.0x the fp32 one)"], err
    # a resume keeps the recorded bf16 even where the check would now say fp32
    monkeypatch.setattr(devices, "bf16_speedup", lambda: 1.0)
    monkeypatch.setenv("UNMASKED_CACHE", str(tmp_path / "another-cache"))
    assert _precision_of(run) == "bf16"
    assert _precision_of(run, precision="fp32") == "fp32"  # explicit on resume wins


def test_auto_trains_in_fp32_on_a_cpu_without_bf16(fm_root, tmp_path, capsys):
    summary = pretrain(tiny_config(tmp_path, objective="lut", precision="auto", steps=1), progress=False)
    assert summary["precision"] == "fp32"
    assert json.loads((tmp_path / "run" / "config.json").read_text())["precision"] == "fp32"
    assert "precision fp32 (auto: this CPU has neither AVX-512 BF16 nor AMX" in capsys.readouterr().err


def test_a_run_saved_with_auto_resumes_in_the_fp32_it_trained_in(fm_root, tmp_path, monkeypatch, capsys):
    """A run folder written before the resolved precision was recorded (config.json and checkpoint
    say 'auto', trained in fp32 on a CPU) resumes in fp32 on a CPU whose bf16 is fast."""
    pretrain(tiny_config(tmp_path, objective="lut", steps=2), progress=False)
    run = tmp_path / "run"
    state = load_checkpoint(run / "checkpoint.pt")
    state["config"]["precision"] = "auto"
    save_checkpoint(run / "checkpoint.pt", {k: v for k, v in state.items() if k != "format"})
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "precision": "auto"}))
    _fast_bf16_cpu(monkeypatch, tmp_path)
    capsys.readouterr()
    assert _precision_of(run) == "fp32"
    assert "auto meant fp32 on a CPU" in capsys.readouterr().err
    assert _precision_of(run, precision="auto") == "bf16"  # asked again: chosen for this machine
