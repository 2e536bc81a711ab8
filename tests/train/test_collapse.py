"""The collapse watch: a run made to collapse is named while it runs, logged, and stopped on request."""

import pytest
import torch

from unmasked.errors import TrainingStopped
from unmasked.train.checkpoint import load_checkpoint
from unmasked.train.collapse import embedding_spread
from unmasked.train.loop import pretrain
from unmasked.train.metrics import read_jsonl

from ..helpers import tiny_config

# a teacher temperature far too high: the teacher's targets are uniform from the first step
UNIFORM_TEACHER = dict(objective="dinov2", dino_heads_k=64, dino_head_hidden=32, dino_head_bottleneck=16,
                       dino_local_crops=0, dino_teacher_temp=50.0, dino_teacher_temp_start=50.0,
                       steps=5, log_every=1)


def test_embedding_spread_is_lightlys_metric_scaled_to_one():
    torch.manual_seed(0)
    assert embedding_spread(torch.ones(64, 32) + 1e-6 * torch.randn(64, 32)) < 1e-3  # one embedding
    assert 0.9 < embedding_spread(torch.randn(4096, 32)) < 1.1  # spread over the sphere


def test_a_uniform_teacher_is_named_and_logged(fm_root, tmp_path, capsys):
    summary = pretrain(tiny_config(tmp_path, **UNIFORM_TEACHER), progress=False)
    err = capsys.readouterr().err
    assert summary["collapse"] == "teacher_uniform" and summary["steps"] == 5
    lines = [line for line in err.splitlines() if "collapse at step" in line]
    assert len(lines) == 1  # said once
    assert "collapse at step 3: the DINOv2 teacher's targets are uniform" in lines[0]
    assert "--dino-teacher-temp" in lines[0]
    recs = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if "loss" in r]
    assert [r.get("collapse") for r in recs] == [None, None, "teacher_uniform", "teacher_uniform",
                                                 "teacher_uniform"]
    assert all("embedding_spread" in r for r in recs)


def test_on_collapse_stop_stops_with_the_checkpoint_kept(fm_root, tmp_path):
    with pytest.raises(TrainingStopped, match=r"--on-collapse stop: .*teacher_uniform.*stopped at step 3 .*"
                                              r"checkpoint .*checkpoint.pt is kept"):
        pretrain(tiny_config(tmp_path, on_collapse="stop", **UNIFORM_TEACHER), progress=False)
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["state"]["step"] == 3
    assert (tmp_path / "run" / "encoder.safetensors").is_file()


def test_a_healthy_run_names_no_collapse(fm_root, tmp_path, capsys):
    summary = pretrain(tiny_config(tmp_path, objective="lut", steps=6, log_every=1), progress=False)
    assert summary["collapse"] is None and "collapse" not in capsys.readouterr().err
    assert all(r["embedding_spread"] > 0.02 for r in read_jsonl(tmp_path / "run" / "metrics.jsonl"))
