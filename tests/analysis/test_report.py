import json

from unmasked.cli import main
from unmasked.train.loop import pretrain

from ..helpers import tiny_config


def test_analyze_and_compare_two_tiny_runs(fm_root, tmp_path, capsys):
    runs = []
    for obj in ("mae", "lut"):  # one lr rule for both (LUT's own is sqrt), so only the objective differs
        pretrain(tiny_config(tmp_path / obj, objective=obj, steps=2, lr_scaling="linear"), progress=False)
        runs.append(str(tmp_path / obj / "run"))
    assert main(["analyze", runs[0], "--no-progress", "--images", "40", "--device", "cpu"]) == 0
    a = json.loads((tmp_path / "mae" / "run" / "analysis" / "analysis.json").read_text())
    assert len(a["attention_distance"]["per_head"]) == 2 and len(a["attention_distance"]["per_head"][0]) == 2
    assert 0 < a["attention_distance"]["last_layers"] < 30 and a["attention_distance"]["uniform"] > 14.43
    for f in ("attention_distance.png", "attention_nmi.png", "spectrum.png", "attention_maps_cls.png",
              "attention_maps_patch.png", "reconstructions.png"):
        assert (tmp_path / "mae" / "run" / "analysis" / f).stat().st_size > 1000, f

    out = tmp_path / "report"
    assert main(["compare", *runs, "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    text = (out / "report.md").read_text()
    for f in ("report.md", "report.html", "attention_distance.png", "attention_nmi.png", "spectrum.png",
              "attention_maps.png", "reconstructions.png"):
        assert (out / f).is_file(), f
    assert text.count(str(tmp_path)) >= 2  # a table row per run
    assert "fine-tuning not computed" in text and "unmasked eval finetune" in text
    assert (tmp_path / "lut" / "run" / "knn.json").is_file() and (tmp_path / "lut" / "run" / "linear.json").is_file()
    assert "raw pixels (reference)" in text and "GFLOP/image" in text  # the reference row, training compute
    assert "runs agree on crop" in text  # both pad-crop on Fashion-MNIST: only the objective differs
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5

    # a run's checkpoint or exported encoder stands for its folder
    assert main(["compare", runs[0] + "/checkpoint.pt", runs[1] + "/encoder.safetensors", "--out", str(out),
                 "--no-progress", "--device", "cpu", "--no-compute"]) == 0


def test_analyze_refuses_a_layer_the_encoder_lacks_before_any_work(fm_root, tmp_path, capsys, monkeypatch):
    from unmasked.analysis import analyze

    pretrain(tiny_config(tmp_path, objective="mae", steps=1), progress=False)
    monkeypatch.setattr(analyze, "load_data", lambda *a, **k: (_ for _ in ()).throw(AssertionError("data loaded")))
    assert main(["analyze", str(tmp_path / "run"), "--layers", "99", "--no-progress", "--device", "cpu"]) == 2
    assert "--layers 99: the encoder has layers 1-2" in capsys.readouterr().err


def _read_only_under(monkeypatch, folder):
    """Every atomic write into `folder` fails as on a read-only file system; others go through."""
    import errno

    from unmasked.analysis import plots
    from unmasked.eval import run_files
    from unmasked.train import checkpoint

    real = checkpoint.atomic_write

    def write(path, write_fn):
        if folder in [*__import__("pathlib").Path(path).parents]:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real(path, write_fn)

    for module in (checkpoint, plots, run_files):
        monkeypatch.setattr(module, "atomic_write", write)


def test_analyze_of_a_read_only_run_prints_the_numbers_then_names_the_file(tmp_path, capsys, monkeypatch):
    from tests.tiny_run import tiny_run

    run, _ = tiny_run(tmp_path)
    _read_only_under(monkeypatch, run)
    assert main(["analyze", str(run), "--no-progress", "--images", "8", "--device", "cpu"]) == 1
    out, err = capsys.readouterr()
    assert "mean attention distance per layer (px)" in out and "RankMe" in out
    assert f"could not save {run / 'analysis' / 'attention_distance.png'} (Read-only file system)" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (run / "analysis" / "analysis.json").exists()
    assert not [p for p in (run / "analysis").iterdir()]  # no half-written figure


def test_compare_of_a_read_only_run_writes_the_report_and_names_the_files(tmp_path, capsys, monkeypatch):
    from tests.tiny_run import tiny_run

    run, _ = tiny_run(tmp_path)
    _read_only_under(monkeypatch, run)
    out = tmp_path / "report"
    assert main(["compare", str(run), "--out", str(out), "--no-progress", "--device", "cpu"]) == 1
    stdout, err = capsys.readouterr()
    assert "report written to" in stdout and (out / "report.md").is_file()
    assert f"could not save {run / 'knn.json'} (Read-only file system)" in err and "Traceback" not in err
    assert "kNN k=20" in (out / "report.md").read_text() and "%" in (out / "report.md").read_text()


def test_compare_of_runs_on_different_data_is_refused_before_any_work(tmp_path, capsys):
    from tests.tiny_run import tiny_run

    a, data_a = tiny_run(tmp_path / "a")
    b, data_b = tiny_run(tmp_path / "b")
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "report"), "--no-progress",
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "compare: the runs were trained on different data" in err and str(data_a) in err and str(data_b) in err
    assert not (a / "knn.json").exists() and not (tmp_path / "report").exists()
