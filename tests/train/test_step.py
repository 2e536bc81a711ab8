"""The one training step (train/step.py): fp16 with a gradient scaler, and the data wait it reports."""

import time

import pytest
import torch

from unmasked.console import print_summary
from unmasked.train.checkpoint import load_checkpoint
from unmasked.train.loop import Pretrainer, pretrain
from unmasked.train.metrics import read_jsonl
from unmasked.train.step import optimiser_step

from ..helpers import tiny_config


def test_fp16_trains_with_a_gradient_scaler_and_checkpoints_its_scale(fm_root, tmp_path):
    summary = pretrain(tiny_config(tmp_path, objective="lut", precision="fp16", steps=4, log_every=1),
                       progress=False)
    assert summary["precision"] == "fp16"
    losses = [r["loss"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["scaler"]["scale"] > 0
    resumed = Pretrainer(tiny_config(tmp_path, objective="lut", precision="fp16", steps=5), resume=True,
                         progress=False)
    try:
        assert resumed.scaler.get_scale() == state["scaler"]["scale"]
    finally:
        resumed.close()


def test_the_scaler_skips_a_step_whose_fp16_gradients_overflow(fm_root, tmp_path):
    trainer = Pretrainer(tiny_config(tmp_path, objective="mae", precision="fp16"), progress=False)
    try:
        parts = trainer.step_parts
        assert parts.scaler is not None and parts.autocast_dtype is torch.float16
        parts.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**100)  # a scaled fp16 gradient overflows
        before = [p.detach().clone() for p in trainer.objective.student.parameters()]
        out = optimiser_step(parts, 0, trainer.batches.epoch(0, 0))
        assert torch.isfinite(out.loss)
        assert all(torch.equal(a, p) for a, p in zip(before, trainer.objective.student.parameters()))
        assert parts.scaler.get_scale() < 2.0**100  # the scale backs off; the next step can go through
    finally:
        trainer.close()


def test_data_wait_is_logged_per_step_and_in_the_summary(fm_root, tmp_path, capsys, monkeypatch):
    trainer = Pretrainer(tiny_config(tmp_path, objective="mae", steps=4, log_every=2), progress=False)
    real = trainer.batches.epoch

    def slow_epoch(epoch, start):
        for images in real(epoch, start):
            time.sleep(0.5)  # a loader slower than the model
            yield images

    monkeypatch.setattr(trainer.batches, "epoch", slow_epoch)
    try:
        summary = trainer.fit()
    finally:
        trainer.close()
    shares = [r["data_wait"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")]
    # (the first window also holds the first step's one-time costs)
    assert len(shares) == 2 and all(0.0 < s <= 1.0 for s in shares) and shares[-1] > 0.5, shares
    assert 0.3 < summary["data_wait"] <= 1.0
    print_summary(summary)
    assert f"data wait {summary['data_wait']:.0%}" in capsys.readouterr().out


def test_a_fast_loader_waits_little(fm_root, tmp_path):
    summary = pretrain(tiny_config(tmp_path, objective="mae", steps=4, log_every=2), progress=False)
    assert 0.0 <= summary["data_wait"] < 0.3
    assert all(r["data_wait"] < 0.3 for r in read_jsonl(tmp_path / "run" / "metrics.jsonl"))


@pytest.mark.parametrize("objective", ["lut", "dinov2"])
def test_update_teacher_runs_after_the_optimiser_step(fm_root, tmp_path, monkeypatch, objective):
    trainer = Pretrainer(tiny_config(tmp_path, objective=objective, dino_heads_k=32, dino_head_hidden=32,
                                     dino_head_bottleneck=16), progress=False)
    order = []
    monkeypatch.setattr(trainer.optimizer, "step", lambda *a, **k: order.append("step"))
    monkeypatch.setattr(trainer.objective, "update_teacher", lambda m: order.append(("ema", m)))
    try:
        optimiser_step(trainer.step_parts, 0, trainer.batches.epoch(0, 0))
    finally:
        trainer.close()
    assert order == ["step", ("ema", trainer.schedules.ema_momentum[0])]
