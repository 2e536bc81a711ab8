"""Evaluations that cannot write into their run folder still print their numbers, and say so."""

import errno

import pytest
from safetensors import SafetensorError

from unmasked.cli import main
from unmasked.eval import run_files
from unmasked.train.loop import pretrain

from ..data.helpers import class_folder
from ..helpers import tiny_config


@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, "No space left on device"),
    RuntimeError("[enforce fail at inline_container.cc:783] . PytorchStreamWriter failed writing file"),
    SafetensorError("Error while serializing: IoError(No space left on device)"),
])
def test_a_failed_write_is_one_line_naming_the_file_and_leaves_nothing(tmp_path, error):
    def write(tmp):
        open(tmp, "wb").write(b"partial")
        raise error

    problem = run_files.save_in_run(tmp_path, "knn.json", write)
    assert problem.startswith(f"could not save {tmp_path / 'knn.json'} (") and "\n" not in problem
    assert list(tmp_path.iterdir()) == []  # no partial file, no temp file


def test_save_result_records_what_was_not_saved(tmp_path):
    ok = run_files.save_result(tmp_path, "knn.json", {"top1": 1.0})
    assert "not_saved" not in ok and (tmp_path / "knn.json").is_file()
    bad = run_files.save_result(tmp_path / "knn.json", "x.json", {"top1": 1.0})  # its folder is a file
    assert bad["not_saved"] and "x.json" in bad["not_saved"][0]


def test_eval_knn_in_a_read_only_run_folder_prints_the_accuracy_then_says_it_was_not_saved(
        fm_root, tmp_path, capsys, monkeypatch):
    pretrain(tiny_config(tmp_path, steps=1), progress=False)
    data = class_folder(tmp_path / "images", per_class=6, size=(28, 28))
    run = tmp_path / "run"
    before = sorted(p.name for p in run.iterdir())

    def read_only(path, write_fn):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(run_files, "atomic_write", read_only)
    code = main(["eval", "knn", str(run), "--data", str(data), "--k", "3", "--no-progress", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "kNN on" in out and "k=3" in out and "%" in out
    assert f"could not save {run / 'knn-k3-on-images.json'} (Read-only file system)" in err and "Traceback" not in err
    assert sorted(p.name for p in run.iterdir()) == before
