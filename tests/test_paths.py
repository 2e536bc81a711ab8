"""A run made with a relative --data is resumed and evaluated from another folder."""

import json

from unmasked.cli import main
from unmasked.train.loop import pretrain

from .data.helpers import class_folder
from .helpers import tiny_config


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


TINY = ["--img-size", "16", "--patch-size", "4", "--width", "32", "--depth", "1", "--heads", "2",
        "--decoder-width", "32", "--decoder-depth", "1", "--decoder-heads", "2", "--batch-size", "4",
        "--steps", "1", "--device", "cpu", "--num-workers", "0", "--no-progress"]


def test_an_out_folder_inside_the_data_is_refused_before_anything_is_written(tmp_path, capsys):
    from .data.helpers import write_image

    flat = tmp_path / "flat"  # unlabeled: the run's PNGs would become training images
    for i in range(8):
        write_image(flat / f"{i}.png", size=(16, 16), seed=i)
    labeled = tmp_path / "labeled"  # labeled: the run folder would become an empty class
    class_folder(labeled, per_class=4, size=(16, 16))
    for data in (flat, labeled):
        assert main(["pretrain", "--data", str(data), "--out", str(data / "myrun"), *TINY]) == 2
        err = capsys.readouterr().err
        assert f"--out {data / 'myrun'} is inside --data {data}" in err and "Traceback" not in err
        assert not (data / "myrun").exists()  # no folder, no .lock left to break later runs


def test_run_folders_already_inside_an_image_folder_are_left_out_of_its_scan(tmp_path, capsys):
    from unmasked.data import image_folder

    from .data.helpers import write_image

    labeled = tmp_path / "labeled"
    class_folder(labeled, per_class=4, size=(16, 16))
    (labeled / "oldrun").mkdir()
    (labeled / "oldrun" / ".lock").write_text("pid 1, pretrain\n")  # what a refused run once left
    flat = tmp_path / "flat"
    for i in range(8):
        write_image(flat / f"{i}.png", size=(16, 16), seed=i)
    write_image(flat / "run" / "analysis" / "figure.png", size=(16, 16))
    (flat / "run" / "checkpoint.pt").write_bytes(b"")
    lab = image_folder.scan(labeled)
    assert lab.classes == ["cat", "dog"] and len(lab.train.files) + len(lab.heldout.files) == 8
    assert len(image_folder.scan(flat).train.files) == 8
    err = capsys.readouterr().err
    assert f"unmasked: note: {labeled / 'oldrun'} is an unmasked run folder: its files are left out" in err
    assert f"{flat / 'run'} is an unmasked run folder" in err


def test_pretrain_knn_on_unlabeled_data_is_refused_before_training(tmp_path, capsys):
    from .data.helpers import write_image

    flat = tmp_path / "flat"
    for i in range(8):
        write_image(flat / f"{i}.png", size=(16, 16), seed=i)
    assert main(["pretrain", "--data", str(flat), "--out", str(tmp_path / "r"), "--knn", *TINY]) == 2
    assert "--knn: the kNN evaluation after pretraining needs labels" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
