"""No stale or mislabelled numbers: replaced images recompute, variants get their own file, and
`compare` shows only the default protocol under its headers, with the k actually used."""

import json
import shutil

import numpy as np
from PIL import Image

from unmasked.cli import main
from unmasked.train.loop import pretrain

from ..helpers import tiny_config


def _stripes(path, vertical, seed):
    rng = np.random.default_rng(seed)
    a = np.zeros((28, 28), np.uint8)
    a[::4] = 255
    a = a.T if vertical else a
    a = np.clip(a.astype(int) + rng.integers(0, 40, a.shape), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)


def _folder(root, swap_train=False):
    for split, n in (("train", 6), ("val", 3)):
        for c, vertical in (("h", False), ("v", True)):
            label_vertical = (not vertical) if (swap_train and split == "train") else vertical
            for i in range(n):
                _stripes(root / split / c / f"{i}.png", label_vertical, seed=i + 10 * vertical)
    return root


def _knn(run, data, *extra):
    assert main(["eval", "knn", str(run), "--data", str(data), "--no-progress", "--device", "cpu", *extra]) in (0,)


def test_replaced_images_are_recomputed_not_read_from_the_cache(fm_root, tmp_path, capsys):
    pretrain(tiny_config(tmp_path, steps=1), progress=False)
    run, data = tmp_path / "run", _folder(tmp_path / "images")
    _knn(run, data, "--k", "3")
    first = json.loads((run / "knn-k3-on-images.json").read_text())
    shutil.rmtree(data)
    _folder(data, swap_train=True)  # same names, sizes and counts; train images now under the other class
    _knn(run, data, "--k", "3")
    second = json.loads((run / "knn-k3-on-images.json").read_text())
    assert len(list((run / "features").glob("train-*.pt"))) == 2  # a new key, not the old entry
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copy(run / "checkpoint.pt", fresh / "checkpoint.pt")
    _knn(fresh, data, "--k", "3")
    assert second["results"] == json.loads((fresh / "knn-k3-on-images.json").read_text())["results"]
    assert second["results"] != first["results"]
    capsys.readouterr()


def test_variants_get_their_own_file_and_compare_shows_only_the_default(fm_root, tmp_path, capsys):
    data = _folder(tmp_path / "images")
    pretrain(tiny_config(tmp_path, data=str(data), steps=1, subset=None, batch_size=4, img_size=28, patch_size=4,
                         decoder_width=32, decoder_depth=1, decoder_heads=2), progress=False)
    run = tmp_path / "run"
    _knn(run, data, "--k", "1", "--temperature", "0.5")
    assert (run / "knn-k1-T0.5.json").is_file() and not (run / "knn.json").exists()
    record = json.loads((run / "knn-k1-T0.5.json").read_text())
    assert record["default_protocol"] is False and record["transform"]["img_size"] == 28
    # a knn.json written before results recorded their protocol, with k = 1: not shown as k = 20
    legacy = {k: v for k, v in record.items() if k not in ("default_protocol", "file")}
    (run / "knn.json").write_text(json.dumps(legacy))
    out = tmp_path / "report"
    assert main(["compare", str(run), "--out", str(out), "--no-compute", "--no-progress", "--device", "cpu"]) == 0
    text = (out / "report.md").read_text()
    assert f"knn.json does not hold the default protocol (k 1, T 0.5, data {data}); not shown" in text
    row = [ln for ln in text.splitlines() if ln.startswith(f"| {run}")][0]
    assert f"{record['top1']['cls']:.2f}" not in row.split("|")[7]


def test_k_above_the_training_set_is_labelled_with_the_k_used(fm_root, tmp_path, capsys):
    pretrain(tiny_config(tmp_path, steps=1), progress=False)
    run, data = tmp_path / "run", _folder(tmp_path / "images")
    capsys.readouterr()
    _knn(run, data, "--k", "5", "20")
    printed = capsys.readouterr().out
    assert "k=5" in printed and "k=12" in printed and "k=20 " not in printed
    result = json.loads((run / "knn-on-images.json").read_text())
    assert result["k_used"] == {"5": 5, "20": 12}

    from unmasked.analysis.report import _knn_cell

    assert "(k=12: all training images)" in _knn_cell(result)


def test_the_features_precision_is_recorded_and_keys_the_cache(fm_root, tmp_path, monkeypatch, capsys):
    """float32 on a CPU; features computed under bf16 autocast (as on a GPU) are another cache entry
    and say so in the result file."""
    import torch

    from unmasked.eval import common, features

    pretrain(tiny_config(tmp_path, steps=1), progress=False)
    run, data = tmp_path / "run", _folder(tmp_path / "images")
    _knn(run, data, "--k", "3")
    fp32 = json.loads((run / "knn-k3-on-images.json").read_text())
    assert fp32["precision"] == "float32"
    bf16 = lambda device: torch.bfloat16  # noqa: E731 - what a GPU gets, here on the CPU
    monkeypatch.setattr(features, "feature_autocast", bf16)
    monkeypatch.setattr(common, "feature_autocast", bf16)
    _knn(run, data, "--k", "3")
    assert json.loads((run / "knn-k3-on-images.json").read_text())["precision"] == "bfloat16 autocast"
    assert len(list((run / "features").glob("train-*.pt"))) == 2  # not the float32 entry
    capsys.readouterr()
