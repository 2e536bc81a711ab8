"""`unmasked demo` replaces its own folder only, and picks its preset by device."""

import json

from unmasked.cli import main
from unmasked.demo import CPU_PRESET, _clear_previous_demo, demo_config


def test_demo_refuses_to_delete_a_folder_it_did_not_write(tmp_path, capsys):
    (tmp_path / "thesis.tex").write_text("precious")
    assert main(["demo", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "not an earlier demo run" in capsys.readouterr().err
    assert (tmp_path / "thesis.tex").read_text() == "precious"


def test_an_earlier_demo_or_an_empty_folder_is_replaced(tmp_path):
    old = tmp_path / "demo"
    old.mkdir()
    (old / "config.json").write_text(json.dumps({"objective": "lut", "data": "fashion-mnist"}))
    (old / "checkpoint.pt").write_bytes(b"old")
    _clear_previous_demo(old)
    assert not old.exists()
    (tmp_path / "empty").mkdir()
    _clear_previous_demo(tmp_path / "empty")
    assert not (tmp_path / "empty").exists()


def test_cpu_preset_on_cpu():
    cfg = demo_config("runs/x", "cpu")
    assert (cfg.objective, cfg.data) == ("lut", "fashion-mnist")
    assert all(getattr(cfg, k) == v for k, v in CPU_PRESET.items())


def test_demo_takes_any_registered_objective():
    cfg = demo_config("runs/x", "cpu", "mae")
    assert cfg.objective == "mae" and cfg.decoder_depth == CPU_PRESET["decoder_depth"]
    import pytest

    with pytest.raises(SystemExit):  # argparse refuses an unregistered objective
        main(["demo", "--objective", "nope", "--no-progress"])


def test_demo_clears_an_earlier_demo_of_another_objective(tmp_path):
    old = tmp_path / "demo"
    old.mkdir()
    (old / "config.json").write_text(json.dumps({"objective": "mae", "data": "fashion-mnist"}))
    _clear_previous_demo(old)
    assert not old.exists()
