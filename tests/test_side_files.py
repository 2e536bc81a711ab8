"""Odd side files (an encoder.json that is not JSON, a torn knn.json) are one-line errors naming them."""

import json

import pytest

from unmasked.cli import main
from unmasked.errors import UserError
from unmasked.files import read_json, require_keys
from unmasked.train.loop import pretrain

from .helpers import tiny_config


def test_read_json_names_the_file_in_one_line(tmp_path):
    torn = tmp_path / "knn.json"
    torn.write_text('{"top1": {"cls": 81.')
    with pytest.raises(UserError) as e:
        read_json(torn)
    assert str(e.value).startswith(f"{torn}: not valid JSON (JSONDecodeError") and "\n" not in str(e.value)
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(UserError, match="bin.json: not valid JSON"):
        read_json(tmp_path / "bin.json")
    with pytest.raises(UserError, match="lacks spec, mean"):
        require_keys({"std": 1}, ("spec", "mean", "std"), torn)
    with pytest.raises(UserError, match="expected a JSON object, found list"):
        require_keys([], ("spec",), torn)


def test_run_with_a_broken_encoder_json_or_torn_result_gives_one_line(fm_root, tmp_path, capsys):
    pretrain(tiny_config(tmp_path, steps=1), progress=False)
    run = tmp_path / "run"
    (run / "encoder.json").write_text("this is not json")
    assert main(["eval", "knn", str(run / "encoder.safetensors"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'encoder.json'}: not valid JSON" in err and err.count("\n") == 1
    (run / "encoder.json").write_text(json.dumps({"format": "unmasked-encoder/1"}))
    assert main(["eval", "knn", str(run / "encoder.safetensors"), "--no-progress"]) == 2
    assert "encoder.json: lacks spec, mean, std, data" in capsys.readouterr().err

    (run / "knn.json").write_text('{"protocol": "knn", "ks": [20')
    assert main(["compare", str(run), "--out", str(tmp_path / "report"), "--no-compute", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'knn.json'}: not valid JSON" in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("text,found", [("[1, 2]", "found list"), ("{}", "no objective or data")])
def test_a_config_json_that_is_json_but_not_a_run_config_is_named(tmp_path, capsys, text, found):
    from unmasked.analysis.compute import training_compute

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(text)
    assert main(["compare", str(run), str(run), "--out", str(tmp_path / "cmp"), "--no-compute"]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'config.json'}: not a run config" in err and found in err and "Traceback" not in err
    with pytest.raises(UserError, match="not a run config"):
        training_compute(run)


def test_resume_where_checkpoint_pt_is_a_folder_says_so(tmp_path, capsys):
    (tmp_path / "run" / "checkpoint.pt").mkdir(parents=True)
    assert main(["pretrain", "--out", str(tmp_path / "run"), "--resume", "--no-progress"]) == 2
    assert f"--resume: {tmp_path / 'run' / 'checkpoint.pt'} is not a file (a folder?)" in capsys.readouterr().err
