"""A run made with a relative --data is resumed and evaluated from another folder."""

import json

from unmasked.cli import main
from unmasked.train.loop import pretrain

from .conftest import tiny_config
from .data.helpers import class_folder


def test_relative_data_is_recorded_absolute_and_works_from_elsewhere(tmp_path, monkeypatch, capsys):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    class_folder(work / "images", per_class=12, size=(16, 16))
    elsewhere.mkdir()
    monkeypatch.chdir(work)
    cfg = tiny_config(tmp_path, data="images", subset=None, batch_size=8, steps=1, img_size=16, patch_size=4)
    summary = pretrain(cfg, progress=False)
    run = tmp_path / "run"
    saved = json.loads((run / "config.json").read_text())
    assert saved["data"] == str(work / "images") and saved["data_as_typed"] == "images"
    assert summary["data"] == "images"  # shown as typed

    monkeypatch.chdir(elsewhere)
    assert pretrain(tiny_config(tmp_path, steps=2), resume=True, explicit={"out", "steps"},
                    progress=False)["steps"] == 2
    assert main(["eval", "knn", str(run), "--k", "1", "--device", "cpu", "--num-workers", "0",
                 "--no-progress"]) == 0
    assert "kNN on" in capsys.readouterr().out
