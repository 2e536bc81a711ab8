"""--tensorboard mirrors metrics.jsonl into event files in the run folder."""

import builtins

import pytest

from unmasked.errors import UserError
from unmasked.train import tensorboard as tb
from unmasked.train.loop import pretrain
from unmasked.train.metrics import JsonlWriter, read_jsonl

from ..helpers import tiny_config


def _scalars(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def test_tensorboard_mirrors_metrics_including_the_monitor(fm_root, tmp_path):
    cfg = tiny_config(tmp_path, objective="lut", subset=128, epochs=1, log_every=2, knn_every=0.5,
                      tensorboard=True)
    pretrain(cfg, progress=False)
    run = tmp_path / "run"
    records = read_jsonl(run / "metrics.jsonl")
    scalars = _scalars(run / "tensorboard")
    for key, t in (("loss", "loss/loss"), ("loss_lut", "loss/loss_lut"), ("lr", "schedule/lr"),
                   ("ema_momentum", "schedule/ema_momentum"), ("images_per_s", "speed/images_per_s"),
                   ("knn20_cls", "knn_monitor/knn20_cls"), ("knn20_mean", "knn_monitor/knn20_mean")):
        want = [(r["step"], r[key]) for r in records if key in r]
        assert want, key
        got = scalars[t]
        assert [s for s, _ in got] == [s for s, _ in want], t
        assert all(abs(g - w) < 1e-5 * max(1, abs(w)) for (_, g), (_, w) in zip(got, want)), t


def test_missing_tensorboard_names_the_extra(tmp_path, monkeypatch):
    real = builtins.__import__

    def no_tb(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tb)
    with pytest.raises(UserError, match=r"--tensorboard needs .*pip install 'unmasked\[tensorboard\]'"):
        tb.mirror_to_tensorboard(JsonlWriter(tmp_path / "m.jsonl"), tmp_path, 0, enabled=True)


def test_tags_group_curves():
    assert tb.tag("loss_mae") == "loss/loss_mae"
    assert tb.tag("knn20_cls") == "knn_monitor/knn20_cls"
    assert tb.tag("ema_momentum") == "schedule/ema_momentum"
    assert tb.tag("grad_norm") == "train/grad_norm"
