import json

import torch

from unmasked.train.checkpoint import load_checkpoint
from unmasked.train.loop import pretrain
from unmasked.train.metrics import read_jsonl

from ..helpers import tiny_config


def _weights(run_dir):
    return load_checkpoint(run_dir / "checkpoint.pt")


def test_tiny_pretrain_loss_decreases(fm_root, tmp_path):
    cfg = tiny_config(tmp_path, objective="mae", subset=512, batch_size=32, epochs=2, lr=2e-3,
                      warmup_epochs=0, log_every=4)
    summary = pretrain(cfg, progress=False)
    assert summary["completed"] and summary["steps"] == 32 and summary["images_seen"] == 32 * 32
    losses = [r["loss"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")]
    assert len(losses) == 8
    assert sum(losses[-2:]) / 2 < 0.8 * losses[0]
    run = tmp_path / "run"
    for name in ("config.json", "checkpoint.pt", "encoder.safetensors", "encoder.json", "summary.json"):
        assert (run / name).is_file(), name
    assert json.loads((run / "config.json").read_text())["mean"] is not None


def test_lut_pretrain_runs_and_logs_parts(fm_root, tmp_path):
    cfg = tiny_config(tmp_path, objective="lut", steps=4, log_every=2)
    summary = pretrain(cfg, progress=False)
    assert summary["steps"] == 4 and not summary["completed"]
    rec = read_jsonl(tmp_path / "run" / "metrics.jsonl")[-1]
    assert {"loss", "loss_mae", "loss_lut", "lr", "ema_momentum", "images_per_s"} <= set(rec)
    assert abs(rec["loss"] - (rec["loss_mae"] + 0.25 * rec["loss_lut"])) < 1e-4


def test_resume_continues_exactly(fm_root, tmp_path):
    """A run stopped at step k and resumed ends with the same weights as an uninterrupted run."""
    full = tiny_config(tmp_path / "a", objective="lut", subset=128, batch_size=32, epochs=3, accum_steps=2)
    pretrain(full, progress=False)

    part = tiny_config(tmp_path / "b", objective="lut", subset=128, batch_size=32, epochs=3, accum_steps=2,
                       steps=5)  # stops mid-epoch 2 (4 steps per epoch)
    assert pretrain(part, progress=False)["steps"] == 5
    resumed = tiny_config(tmp_path / "b", objective="lut", subset=128, batch_size=32, epochs=3, accum_steps=2)
    summary = pretrain(resumed, resume=True, explicit={"out"}, progress=False)
    assert summary["completed"] and summary["steps"] == 12 and summary["images_seen"] == 12 * 32

    a, b = _weights(tmp_path / "a" / "run"), _weights(tmp_path / "b" / "run")
    assert a["state"]["step"] == b["state"]["step"] == 12
    for key in a["objective"]:
        assert torch.equal(a["objective"][key], b["objective"][key]), key
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)
    steps = [r["step"] for r in read_jsonl(tmp_path / "b" / "run" / "metrics.jsonl")]
    assert steps == sorted(set(steps))  # no duplicated log lines after the resume


def test_lut_teacher_stays_in_eval_mode_through_fit(fm_root, tmp_path):
    from unmasked.train.loop import Pretrainer

    trainer = Pretrainer(tiny_config(tmp_path, objective="lut", steps=2, drop_path=0.1), progress=False)
    modes = []
    trainer.objective.teacher.projector.register_forward_pre_hook(
        lambda m, _: modes.append((m.training, trainer.objective.teacher.encoder.training)))
    before = trainer.objective.teacher.projector[1].running_mean.clone()
    trainer.fit()
    assert modes and not any(a or b for a, b in modes)
    after = trainer.objective.teacher.projector[1].running_mean
    student = trainer.objective.student.projector[1].running_mean
    assert not torch.equal(after, before)  # averaged towards the student's statistics ...
    assert not torch.equal(after, student)  # ... not copied from them
