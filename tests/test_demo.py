"""`unmasked demo` deletes only files it can prove it wrote, and picks its preset by device."""

import os
from pathlib import Path

import pytest

from unmasked.analysis.plots import knn_monitor_plot
from unmasked.cli import main
from unmasked.demo import CPU_DEMO, CPU_PRESET, GPU_PRESET, demo_config
from unmasked.demo_folder import MARKER, clear_previous_demo, mark_as_demo, record_demo_files
from unmasked.errors import UserError


def _old_demo(folder):
    mark_as_demo(folder)
    for name in ("config.json", "checkpoint.pt", "metrics.jsonl", "knn.json", ".checkpoint.pt.ab12.tmp"):
        (folder / name).write_text("old")
    (folder / "features").mkdir()
    (folder / "features" / "train-0123456789abcdef.pt").write_bytes(b"old")
    record_demo_files(folder)  # what the demo does after each of its stages
    return folder


def test_demo_refuses_a_folder_without_its_marker_even_if_it_looks_like_a_demo(tmp_path, capsys):
    (tmp_path / "thesis.tex").write_text("precious")
    (tmp_path / "config.json").write_text('{"objective": "lut", "data": "fashion-mnist"}')
    assert main(["demo", "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"--out {tmp_path}" in err and MARKER in err
    assert (tmp_path / "thesis.tex").read_text() == "precious" and (tmp_path / "config.json").is_file()


def test_demo_into_the_working_directory_refuses_and_deletes_nothing(tmp_path, capsys, monkeypatch):
    (tmp_path / "notes.md").write_text("mine")
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--out", ".", "--no-progress"]) == 2
    assert "--out ." in capsys.readouterr().err
    assert os.listdir(tmp_path) == ["notes.md"]


def test_an_earlier_demo_with_user_notes_beside_it_is_refused_naming_them(tmp_path):
    _old_demo(tmp_path)
    (tmp_path / "my-notes.txt").write_text("mine")
    (tmp_path / "features" / "keep.npy").write_bytes(b"mine")
    with pytest.raises(UserError, match=r"did not write: features/keep.npy, my-notes.txt;"):
        clear_previous_demo(tmp_path)
    assert (tmp_path / "checkpoint.pt").is_file() and (tmp_path / MARKER).is_file()


def test_an_earlier_demo_loses_exactly_its_run_files_and_keeps_its_folder(tmp_path):
    _old_demo(tmp_path / "demo")
    clear_previous_demo(tmp_path / "demo")
    assert (tmp_path / "demo").is_dir() and os.listdir(tmp_path / "demo") == []
    (tmp_path / "empty").mkdir()
    clear_previous_demo(tmp_path / "empty")  # an empty folder is fine as it is
    clear_previous_demo(tmp_path / "absent")
    assert not (tmp_path / "absent").exists()


def test_user_files_named_like_run_files_are_named_not_deleted(tmp_path):
    """Only the files the demo listed as it wrote them go: not knn-mynotes.json, not a figure of one's own."""
    _old_demo(tmp_path)
    (tmp_path / "knn-mynotes.json").write_text("mine")
    (tmp_path / "analysis").mkdir()
    (tmp_path / "analysis" / "my_figure.png").write_bytes(b"mine")
    with pytest.raises(UserError, match=r"did not write: analysis/my_figure.png, knn-mynotes.json;"):
        clear_previous_demo(tmp_path)
    assert (tmp_path / "knn-mynotes.json").is_file() and (tmp_path / "analysis" / "my_figure.png").is_file()
    assert (tmp_path / "checkpoint.pt").is_file()


def test_a_marker_without_a_file_list_deletes_nothing(tmp_path):
    """A marker of an earlier version (or a demo killed before it listed its files): each file is named."""
    _old_demo(tmp_path)
    (tmp_path / MARKER).write_text("written by `unmasked demo`\n")
    with pytest.raises(UserError, match=r"lists no files .*: \.checkpoint\.pt\.ab12\.tmp, checkpoint\.pt"):
        clear_previous_demo(tmp_path)
    assert (tmp_path / "checkpoint.pt").is_file()


def test_a_symlink_in_a_marked_folder_is_not_followed(tmp_path):
    precious = tmp_path / "elsewhere"
    precious.mkdir()
    (precious / "data.bin").write_bytes(b"mine")
    _old_demo(tmp_path / "demo")
    (tmp_path / "demo" / "analysis").symlink_to(precious)
    with pytest.raises(UserError, match="analysis"):
        clear_previous_demo(tmp_path / "demo")
    assert (precious / "data.bin").is_file()


def test_cpu_preset_on_cpu():
    cfg = demo_config("runs/x", "cpu")
    assert (cfg.objective, cfg.data) == ("lut", "fashion-mnist")
    preset = {**CPU_PRESET, **CPU_DEMO["lut"]}
    assert all(cfg.option(k) == v for k, v in preset.items())
    assert cfg.peak_lr() == 1.2e-3  # LUT's sqrt rule from its base 3e-4 at batch 256, the budget study's winner


def test_the_lut_preset_is_the_budget_study_s_winner():
    # the demo trains what studies/cpu-budget-lut-seeds.toml confirmed, option for option
    from unmasked.study.spec import load_study

    study = load_study(Path(__file__).resolve().parents[1] / "studies" / "cpu-budget-lut-seeds.toml")
    run = next(r.options for r in study.runs if r.arm == "e3-lr12")
    preset = {**CPU_PRESET, **CPU_DEMO["lut"]}
    assert set(preset) - {"knn_every"} <= set(run)  # the study sets every option the preset does
    assert {k: run[k] for k in preset if k != "knn_every"} == {k: v for k, v in preset.items() if k != "knn_every"}


def test_demo_takes_any_registered_objective():
    cfg = demo_config("runs/x", "cpu", "mae")
    assert cfg.objective == "mae" and cfg.objective_options.decoder_depth == CPU_PRESET["decoder_depth"]
    import pytest

    with pytest.raises(SystemExit):  # argparse refuses an unregistered objective
        main(["demo", "--objective", "nope", "--no-progress"])


def test_demo_clears_an_earlier_demo_of_another_objective(tmp_path):
    old = tmp_path / "demo"
    mark_as_demo(old)
    (old / "config.json").write_text('{"objective": "mae", "data": "fashion-mnist"}')
    record_demo_files(old)
    clear_previous_demo(old)
    assert not (old / "config.json").exists()


def test_the_command_line_demo_trains_the_objective_it_is_given(monkeypatch):
    import unmasked.demo

    seen = {}
    monkeypatch.setattr(unmasked.demo, "run_demo", lambda out, device, progress, objective, transcript: seen.update(
        objective=objective, transcript=transcript) or {})
    assert main(["demo", "--objective", "dinov2", "--no-progress", "--out", "somewhere"]) == 0
    assert seen == {"objective": "dinov2", "transcript": None}


def test_demo_transcript_holds_what_was_printed_and_its_numbers(monkeypatch, tmp_path, capsys):
    import json

    import unmasked.demo

    summary = {"model": "vit/7", "data": "fashion-mnist", "device": "cpu (2 threads)", "precision": "fp32",
               "steps": 468, "epochs": 2.0, "images_seen": 119808, "time_s": 200.0, "completed": True}
    knn = {"top1": {"cls": 79.74, "mean": 78.94}, "headline_k": 20, "temperature": 0.07,
           "pixels": {"top1": 84.59}, "time_s": 25.0, "precision": "float32"}
    monitor = [{"step": 234, "epoch": 1.0, "knn20_cls": 70.0, "knn20_mean": 71.0, "knn20_pixels": 82.5,
                "knn_time_s": 3.0}]
    figure = knn_monitor_plot(monitor, tmp_path / "run-figure" / "knn_monitor.png")
    monkeypatch.setattr(unmasked.demo, "_demo_in", lambda *a: print("kNN20 79.74") or {
        "pretrain": summary, "knn": knn, "monitor": monitor, "figure": figure, "printed": "kNN20 79.74\n"})
    dest = tmp_path / "results" / "demo-mae"
    unmasked.demo.run_demo(str(tmp_path / "run"), device="cpu", progress=False, objective="mae",
                           transcript=str(dest))
    assert (dest / "transcript.txt").read_text() == f"$ unmasked demo --objective mae --out {tmp_path / 'run'}\n" \
        "kNN20 79.74\n"
    d = json.loads((dest / "demo.json").read_text())
    assert d["knn"]["top1"] == {"cls": 79.74, "mean": 78.94} and d["knn"]["pixels_top1"] == 84.59
    assert d["pretrain"]["images_seen"] == 119808 and d["time_s"] >= 0 and d["objective"] == "mae"
    assert d["provenance"]["torch"] and d["provenance"]["machine"]["cpu"]
    assert d["monitor"] == [{"epoch": 1.0, "step": 234, "knn20_cls": 70.0, "knn20_mean": 71.0, "knn20_pixels": 82.5}]
    assert (dest / "knn_monitor.png").read_bytes() == figure.read_bytes()


def test_both_presets_run_the_knn_monitor():
    # the demo's curve beside the pixels comes from the monitor; it is an observer (tests/train/test_monitor.py)
    assert demo_config("runs/x", "cpu").knn_every == CPU_PRESET["knn_every"] > 0
    assert GPU_PRESET["knn_every"] > 0


def test_help_gives_the_committed_demo_times():
    # every number a user reads must trace to a file: --help's times are the committed demos'
    import json

    from unmasked.demo import CPU_MEASURED_S

    results = Path(__file__).resolve().parents[1] / "results"
    for name, (total, train) in CPU_MEASURED_S.items():
        d = json.loads((results / f"demo-{name}" / "demo.json").read_text())
        assert (d["time_s"], d["pretrain"]["time_s"], d["pretrain"]["precision"]) == (total, train, "fp32"), name
    assert set(CPU_MEASURED_S) == {p.parent.name[5:] for p in results.glob("demo-*/demo.json")}
