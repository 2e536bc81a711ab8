"""The kNN monitor: logged at the right steps, and an observer only (same weights without it)."""

import random

import numpy as np
import pytest
import torch

from unmasked.errors import UserError
from unmasked.eval.knn import knn_accuracy
from unmasked.train import monitor as monitor_mod
from unmasked.train.checkpoint import load_checkpoint
from unmasked.train.loop import Pretrainer, pretrain
from unmasked.train.metrics import read_jsonl

from ..data.helpers import class_folder
from ..helpers import tiny_config


def _weights(run):
    return load_checkpoint(run / "checkpoint.pt")["objective"]


def test_monitor_logs_at_its_steps_and_keeps_the_trajectory(fm_root, tmp_path):
    # 256 images / batch 32 = 8 steps per epoch; every 0.5 epoch = every 4 steps; drop path draws
    # from the global RNG every step, so any draw by the monitor would change the weights
    kw = dict(objective="lut", subset=256, epochs=2, drop_path=0.1, log_every=4)
    pretrain(tiny_config(tmp_path / "plain", **kw), progress=False)
    pretrain(tiny_config(tmp_path / "mon", knn_every=0.5, **kw), progress=False)

    knn = [r for r in read_jsonl(tmp_path / "mon" / "run" / "metrics.jsonl") if "knn20_cls" in r]
    assert [r["step"] for r in knn] == [4, 8, 12, 16]
    assert [r["epoch"] for r in knn] == [0.5, 1.0, 1.5, 2.0]
    assert all(0 <= r["knn20_cls"] <= 100 and 0 <= r["knn20_mean"] <= 100 for r in knn)
    a, b = _weights(tmp_path / "plain" / "run"), _weights(tmp_path / "mon" / "run")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_evaluate_restores_rng_and_modules_modes(fm_root, tmp_path, monkeypatch):
    trainer = Pretrainer(tiny_config(tmp_path, objective="lut", knn_every=1), progress=False)
    try:
        obj = trainer.objective
        obj.train()
        if obj.teacher is not None:
            obj.teacher.eval()
        modes = {name: m.training for name, m in obj.named_modules()}
        real = monitor_mod.extract_features

        def drawing(*args, **kwargs):  # as a DataLoader would: draw from every global generator
            torch.rand(3), np.random.rand(), random.random()
            return real(*args, **kwargs)

        monkeypatch.setattr(monitor_mod, "extract_features", drawing)
        before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
        out = trainer.monitor.evaluate()
        assert set(out) == {"knn20_cls", "knn20_mean", "knn20_pixels"}
        assert torch.equal(torch.get_rng_state(), before[0])
        assert np.array_equal(np.random.get_state()[1], before[1]) and random.getstate() == before[2]
        assert {name: m.training for name, m in obj.named_modules()} == modes
    finally:
        trainer.close()


def test_monitor_subsets_are_fixed_and_bounded(fm_root, tmp_path):
    trainer = Pretrainer(tiny_config(tmp_path, objective="mae", subset=256, knn_every=1), progress=False)
    try:
        m = trainer.monitor
        assert len(m.bank) == 256 and len(m.queries) == monitor_mod.QUERY_IMAGES
        again = monitor_mod.fixed_subset(trainer.data.heldout, monitor_mod.QUERY_IMAGES)
        assert torch.equal(again.images, m.queries.images)
        assert m.interval == 8  # one epoch of 8 steps
    finally:
        trainer.close()


def test_monitor_logs_the_pixels_of_its_own_subset(fm_root, tmp_path):
    # the line a monitor curve must cross: the same 20-NN on the bank's and queries' raw pixels
    trainer = Pretrainer(tiny_config(tmp_path, objective="mae", subset=256, knn_every=1), progress=False)
    try:
        m = trainer.monitor
        rows = [m.bank.images.reshape(len(m.bank), -1).float() / 255,
                m.queries.images.reshape(len(m.queries), -1).float() / 255]
        want = knn_accuracy(rows[0], m.bank.labels, rows[1], m.queries.labels, m.classes, ks=(20,))[20]["top1"]
        assert m.evaluate()["knn20_pixels"] == pytest.approx(want)
        assert 50 < want < 100  # far above chance (10%): pixels are a strong baseline on Fashion-MNIST
    finally:
        trainer.close()


@pytest.mark.parametrize("value,match", [(0.0, "--knn-every 0.0: must be a finite number above 0"),
                                         (-1.0, "--knn-every -1.0: must be a finite number above 0")])
def test_bad_knn_every_is_refused(fm_root, tmp_path, value, match):
    with pytest.raises(UserError, match=match):
        pretrain(tiny_config(tmp_path, knn_every=value, steps=1), progress=False)


def test_monitor_needs_labels(tmp_path):
    root = class_folder(tmp_path / "imgs", per_class=10)
    cfg = tiny_config(tmp_path, data=str(root), unlabeled=True, img_size=16, patch_size=4, subset=None,
                      batch_size=4, knn_every=1, steps=1)
    with pytest.raises(UserError, match="--knn-every 1: the kNN monitor needs labels"):
        pretrain(cfg, progress=False)


def test_monitor_on_an_image_folder_keeps_the_trajectory(tmp_path):
    # a folder's images are read through a DataLoader, which draws its seed from the global generator;
    # the monitor reads them for features and for its pixel line, and the weights must not notice
    root = class_folder(tmp_path / "imgs", per_class=16)
    kw = dict(data=str(root), img_size=16, patch_size=4, subset=None, batch_size=8, epochs=2, objective="lut",
              drop_path=0.1)
    pretrain(tiny_config(tmp_path / "plain", **kw), progress=False)
    pretrain(tiny_config(tmp_path / "mon", knn_every=1, **kw), progress=False)
    knn = [r for r in read_jsonl(tmp_path / "mon" / "run" / "metrics.jsonl") if "knn20_cls" in r]
    assert knn and all(0 <= r["knn20_pixels"] <= 100 for r in knn)
    a, b = _weights(tmp_path / "plain" / "run"), _weights(tmp_path / "mon" / "run")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_no_pixel_line_for_images_too_large_to_hold(fm_root, tmp_path, monkeypatch):
    monkeypatch.setattr(monitor_mod, "MAX_PIXEL_VALUES", 28 * 28 - 1)
    trainer = Pretrainer(tiny_config(tmp_path, objective="mae", subset=256, knn_every=1), progress=False)
    try:
        assert "knn20_pixels" not in trainer.monitor.evaluate()
    finally:
        trainer.close()
