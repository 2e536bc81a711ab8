import json

from unmasked.cli import main
from unmasked.train.loop import pretrain

from ..helpers import tiny_config


def test_analyze_and_compare_two_tiny_runs(fm_root, tmp_path, capsys):
    runs = []
    for obj in ("mae", "lut"):
        pretrain(tiny_config(tmp_path / obj, objective=obj, steps=2), progress=False)
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
