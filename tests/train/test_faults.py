"""Faults during training: killed runs, signals, failed checkpoint writes, non-finite losses."""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from unmasked.errors import TrainingStopped, UserError
from unmasked.train import checkpoint as ckpt
from unmasked.train.loop import pretrain
from unmasked.train.metrics import read_jsonl

from ..helpers import tiny_config

TINY_ARGS = ["--objective", "lut", "--width", "32", "--depth", "2", "--heads", "2", "--decoder-width", "32",
             "--decoder-depth", "1", "--decoder-heads", "2", "--proj-hidden", "64", "--subset", "512",
             "--batch-size", "16", "--epochs", "3", "--num-workers", "0", "--device", "cpu", "--log-every", "1"]


def _cli(out, *extra):
    return [sys.executable, "-m", "unmasked", "pretrain", "--no-progress", "--out", str(out), *TINY_ARGS, *extra]


def _final_weights(run):
    return ckpt.load_checkpoint(run / "checkpoint.pt")["objective"]


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    subprocess.run(_cli(out), check=True, capture_output=True, timeout=600)
    return _final_weights(out)


def _wait_for_step(proc, metrics, step, timeout=300):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            pytest.fail(f"run ended before step {step}: {proc.stderr.read()}")
        recs = read_jsonl(metrics) if metrics.exists() else []
        if recs and recs[-1]["step"] >= step:
            return recs[-1]["step"]
        time.sleep(0.02)
    pytest.fail(f"step {step} not reached")


def test_sigkill_at_a_random_step_then_resume_matches(fm_root, tmp_path, uninterrupted):
    seed = random.randrange(1 << 30)
    k = random.Random(seed).randint(5, 60)
    out = tmp_path / "run"
    proc = subprocess.Popen(_cli(out, "--save-every-steps", "1"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _wait_for_step(proc, out / "metrics.jsonl", k)
    proc.kill()  # SIGKILL: no handler runs
    proc.wait()
    state = ckpt.load_checkpoint(out / "checkpoint.pt")  # the latest checkpoint is always a whole one
    assert state["state"]["step"] >= k - 1, f"seed {seed}"
    r = subprocess.run(_cli(out, "--resume"), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    _assert_same_weights(_final_weights(out), uninterrupted)


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_a_checkpoint_at_the_current_step(fm_root, tmp_path, uninterrupted, sig, code):
    out = tmp_path / "run"
    proc = subprocess.Popen(_cli(out, "--save-every", "100"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _wait_for_step(proc, out / "metrics.jsonl", 20)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    step = ckpt.load_checkpoint(out / "checkpoint.pt")["state"]["step"]
    assert step >= 20 and f"checkpoint saved at step {step}" in stdout
    assert json.loads((out / "summary.json").read_text())["interrupted_by"] == sig.name
    r = subprocess.run(_cli(out, "--resume"), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    _assert_same_weights(_final_weights(out), uninterrupted)


def test_failed_checkpoint_write_keeps_the_previous_one(fm_root, tmp_path, monkeypatch):
    cfg = dict(objective="mae", subset=128, batch_size=16, epochs=2, save_every_steps=2)
    pretrain(tiny_config(tmp_path / "ref", **cfg), progress=False)
    ref = _final_weights(tmp_path / "ref" / "run")

    real_save, calls = torch.save, {"n": 0}

    def failing_save(obj, f, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:  # the second checkpoint dies half-written: disk full
            with open(f, "wb") as fh:
                fh.write(b"PK\x03\x04 partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(ckpt.torch, "save", failing_save)
    with pytest.raises(TrainingStopped, match=r"could not write checkpoint .* at step 4 \(No space left on device\)"):
        pretrain(tiny_config(tmp_path, **cfg), progress=False)
    monkeypatch.setattr(ckpt.torch, "save", real_save)
    run = tmp_path / "run"
    assert ckpt.load_checkpoint(run / "checkpoint.pt")["state"]["step"] == 2
    assert [p.name for p in run.iterdir() if p.name.endswith(".tmp")] == []
    pretrain(tiny_config(tmp_path, **cfg), resume=True, explicit={"out"}, progress=False)
    _assert_same_weights(_final_weights(run), ref)


def test_a_full_disk_at_the_first_checkpoint_does_not_claim_one_is_kept(fm_root, tmp_path, monkeypatch):
    def full(obj, f, *a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", full)
    with pytest.raises(TrainingStopped) as e:
        pretrain(tiny_config(tmp_path, objective="mae", subset=64, batch_size=16, steps=2), progress=False)
    assert "(No space left on device); no checkpoint had been written yet" in str(e.value)
    assert "previous checkpoint" not in str(e.value)


def test_disk_full_while_logging_stops_naming_the_file_and_keeps_the_checkpoint(fm_root, tmp_path, monkeypatch):
    from unmasked.train import metrics

    cfg = dict(objective="mae", subset=128, batch_size=16, epochs=2, save_every_steps=2, log_every=1)
    real_write, calls = metrics.JsonlWriter.write, {"n": 0}

    def failing_write(self, record):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
        return real_write(self, record)

    monkeypatch.setattr(metrics.JsonlWriter, "write", failing_write)
    with pytest.raises(TrainingStopped, match=r"could not write .*metrics.jsonl at step 3 \(No space left on device\); "
                                              r"the last good checkpoint .* is kept"):
        pretrain(tiny_config(tmp_path, **cfg), progress=False)
    assert ckpt.load_checkpoint(tmp_path / "run" / "checkpoint.pt")["state"]["step"] == 2


def test_a_torn_metrics_line_does_not_block_resume(fm_root, tmp_path, capsys):
    cfg = dict(objective="mae", subset=128, batch_size=16, epochs=2, save_every_steps=2, log_every=1, steps=2)
    pretrain(tiny_config(tmp_path, **cfg), progress=False)
    log = tmp_path / "run" / "metrics.jsonl"
    with open(log, "a") as f:
        f.write('{"step": 3, "loss": 0.1')  # killed mid-write
    pretrain(tiny_config(tmp_path, **{**cfg, "steps": 4}), resume=True, explicit={"out", "steps"}, progress=False)
    torn = [line for line in capsys.readouterr().err.splitlines() if "is not valid JSON" in line]
    assert len(torn) == 1 and torn[0].startswith("unmasked: warning: ") and "metrics.jsonl: line 3" in torn[0]
    assert [r["step"] for r in read_jsonl(log)] == [1, 2, 3, 4]


def test_unwritable_output_folder_fails_before_training(fm_root, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="the run folder is not writable"):
        pretrain(tiny_config(tmp_path, out=str(blocker / "run")), progress=False)


def _nan_at(monkeypatch, module, step):
    """NaN loss at `step`, counting loss calls: runs using it skip the memory preflight, whose probe
    would be one more call."""
    real, calls = module.masked_mse, {"n": 0}

    def fake(*args, **kwargs):
        loss = real(*args, **kwargs)
        calls["n"] += 1
        return loss * float("nan") if calls["n"] == step + 1 else loss

    monkeypatch.setattr(module, "masked_mse", fake)


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(fm_root, tmp_path, monkeypatch):
    import unmasked.objectives.lut as lut_module

    _nan_at(monkeypatch, lut_module, step=5)
    cfg = tiny_config(tmp_path, objective="lut", save_every_steps=2, log_every=1, memory_check=False)
    with pytest.raises(TrainingStopped,
                       match=r"non-finite loss at step 5: loss=nan \(loss_lut=[0-9.]+, loss_mae=nan\)"):
        pretrain(cfg, progress=False)
    state = ckpt.load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["state"]["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["objective"].values() if v.is_floating_point())


def test_nan_loss_skip_mode_skips_the_step(fm_root, tmp_path, monkeypatch, capsys):
    import unmasked.objectives.mae as mae_module

    _nan_at(monkeypatch, mae_module, step=3)
    summary = pretrain(tiny_config(tmp_path, objective="mae", nan="skip", steps=6, memory_check=False),
                       progress=False)
    assert "unmasked: warning: step 3: non-finite loss" in capsys.readouterr().err
    assert summary["skipped_steps"] == 1 and summary["steps"] == 6
    state = ckpt.load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert all(torch.isfinite(v).all() for v in state["objective"].values() if v.is_floating_point())


def test_resume_with_another_model_is_refused_unless_warm_starting(fm_root, tmp_path):
    pretrain(tiny_config(tmp_path, steps=2), progress=False)
    for change, msg in (({"depth": 3}, "--depth 3 (the run has 2)"), ({"objective": "mae"}, "--objective mae"),
                        ({"patch_size": 7}, "--patch-size 7 (the run has 4)")):
        with pytest.raises(UserError, match=r"cannot resume .*" + msg.replace("(", r"\(").replace(")", r"\)")):
            pretrain(tiny_config(tmp_path, **change), resume=True, explicit={"out", *change}, progress=False)
    # warm start: a new run (other objective) that loads only the encoder
    old = tmp_path / "run"
    new = tiny_config(tmp_path / "warm", objective="mae", init_from=str(old), steps=1)
    trainer_weights = ckpt.load_checkpoint(old / "checkpoint.pt")["objective"]
    from unmasked.train.loop import Pretrainer

    t = Pretrainer(new, progress=False)
    for k, v in t.objective.encoder.state_dict().items():
        assert torch.equal(v, trainer_weights["student.encoder." + k]), k
    with pytest.raises(UserError, match=r"--init-from .*\(width 32, .*\) does not fit this run.s \(width 48"):
        Pretrainer(tiny_config(tmp_path / "warm2", width=48, init_from=str(old)), progress=False)


def test_corrupt_latest_checkpoint_is_reported_on_resume(fm_root, tmp_path):
    pretrain(tiny_config(tmp_path, steps=1), progress=False)
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"\x00" * 100)
    with pytest.raises(UserError, match="cannot be read"):
        pretrain(tiny_config(tmp_path), resume=True, explicit={"out"}, progress=False)


if os.name != "posix":  # pragma: no cover
    pytest.skip("signals are POSIX", allow_module_level=True)


def _file_size_limit(limit):
    """For a child process: writes past `limit` bytes fail with EFBIG, as on a full disk (no SIGXFSZ)."""
    import resource

    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_torch_save_failing_mid_write_is_a_message_not_a_traceback(fm_root, tmp_path):
    """torch.save's zip writer raises RuntimeError ('unexpected pos'), not OSError, when the disk fills."""
    out = tmp_path / "run"
    r = subprocess.run(_cli(out, "--steps", "2"), capture_output=True, text=True, timeout=600,
                       preexec_fn=_file_size_limit(100_000))
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert f"unmasked: training stopped: could not write checkpoint {out / 'checkpoint.pt'} at step 2 (File too " \
           "large)" in r.stderr
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []


def test_safetensors_export_failing_is_a_message(fm_root, tmp_path, monkeypatch):
    from safetensors import SafetensorError

    def disk_full(*a, **kw):  # what safetensors raises on a full disk
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(ckpt, "save_file", disk_full)
    with pytest.raises(TrainingStopped, match=r"could not write .*encoder.safetensors at step 2 \(No space left on "
                                              r"device\); the last good checkpoint .* is kept"):
        pretrain(tiny_config(tmp_path, steps=2), progress=False)
    assert ckpt.load_checkpoint(tmp_path / "run" / "checkpoint.pt")["state"]["step"] == 2


def test_temp_files_of_a_killed_write_are_removed_on_the_next_start(fm_root, tmp_path, capsys):
    pretrain(tiny_config(tmp_path, steps=1), progress=False)
    run = tmp_path / "run"
    left = run / ".checkpoint.pt.k2x9_q7a.tmp"  # atomic_write's name, as SIGKILL mid-write leaves it
    left.write_bytes(b"\0" * 4096)
    notes = run / "my.notes.tmp"  # not one of ours: kept
    notes.write_text("mine")
    pretrain(tiny_config(tmp_path, steps=2), resume=True, explicit={"out", "steps"}, progress=False)
    assert ("removed 1 temp file(s) (0.0 MB) left by an interrupted write: .checkpoint.pt.k2x9_q7a.tmp"
            in capsys.readouterr().err)
    assert not left.exists() and notes.read_text() == "mine"
