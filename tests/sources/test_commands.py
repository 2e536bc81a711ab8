"""`eval knn`, `analyze` and `compare` on sources that are not run folders: a random encoder and a
timm encoder with --weights, on Fashion-MNIST (greyscale, repeated to RGB for the timm encoder) and
on an image folder."""

from __future__ import annotations

import json

import pytest
import timm
from safetensors.torch import save_file

from tests.data.helpers import class_folder
from tests.sources.helpers import randomise_, small_fashion_mnist
from unmasked.cli import main


@pytest.fixture()
def tiny_timm_weights(tmp_path):
    model = randomise_(timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, depth=2))
    f = tmp_path / "vit_tiny.safetensors"
    save_file(model.state_dict(), str(f))
    return f


def _knn(folder) -> dict:
    return json.loads((folder / "knn.json").read_text())


@pytest.mark.parametrize("data_kind", ["fashion-mnist", "folder"])
def test_knn_analyze_and_compare_of_a_random_and_a_timm_encoder(tmp_path, tiny_timm_weights, data_kind, capsys):
    if data_kind == "folder":
        data = class_folder(tmp_path / "imgs", per_class=8, size=(20, 20), mode="L")
    else:
        data = small_fashion_mnist(tmp_path / "fm", train=120, test=40)
    rnd, pub = tmp_path / "random", tmp_path / "public"
    common = ["--data", str(data), "--no-progress", "--k", "5", "20", "--num-workers", "0"]
    assert main(["eval", "knn", "random:vit_tiny/4", "--out", str(rnd), "--img-size", "16", *common]) == 0
    assert main(["eval", "knn", "timm:vit_tiny_patch16_224", "--weights", str(tiny_timm_weights), "--out", str(pub),
                 "--img-size", "32", *common]) == 0
    r, p = _knn(rnd), _knn(pub)
    assert r["default_protocol"] and p["default_protocol"]
    assert r["source"]["name"] == "random:vit_tiny/4" and r["source"]["seed"] == 0
    assert r["transform"]["img_size"] == 16 and r["transform"]["channels"] == 1
    assert p["source"]["weights_sha256"] and p["source"]["normalisation"]["from"] == "the encoder's pretrained_cfg"
    assert p["transform"]["img_size"] == 32 and p["transform"]["channels"] == 3
    assert p["transform"]["mean"] == list(timm.create_model("vit_tiny_patch16_224").pretrained_cfg["mean"])
    if data_kind == "fashion-mnist":
        assert "grey_to_rgb" in p["transform"] and "grey_to_rgb" not in r["transform"]
    for res in (r, p):
        assert 0 <= res["top1"]["cls"] <= 100 and "pixels" in res
    # the same random encoder again: same seed, same features, same numbers
    assert main(["eval", "knn", "random:vit_tiny/4", "--out", str(rnd), "--img-size", "16", *common]) == 0
    assert _knn(rnd)["results"] == r["results"]
    # a results folder holds one source
    assert main(["eval", "knn", "random:vit_small/4", "--out", str(rnd), *common]) == 2
    assert "holds the results of random:vit_tiny/4" in capsys.readouterr().err

    assert main(["analyze", str(pub), "--images", "8", "--map-images", "2", "--no-progress"]) == 0
    a = json.loads((pub / "analysis" / "analysis.json").read_text())
    assert a["source"]["name"] == "timm:vit_tiny_patch16_224" and a["img_size"] == 32
    assert len(a["attention_distance"]["per_head"]) == 2 and len(a["attention_distance"]["per_head"][0]) == 3

    out = tmp_path / "report"
    assert main(["eval", "linear", str(pub), "--epochs", "2", "--warmup-epochs", "0", "--no-progress"]) == 0
    assert main(["compare", str(rnd), str(pub), "--out", str(out), "--no-progress", "--no-compute"]) == 0
    md = (out / "report.md").read_text()
    assert "random:vit_tiny/4" in md and "timm:vit_tiny_patch16_224" in md and "raw pixels" in md


def test_analyze_takes_a_source_and_writes_into_its_results_folder(tmp_path):
    data = small_fashion_mnist(tmp_path / "fm", train=60, test=20)
    rnd = tmp_path / "random"
    assert main(["analyze", "random:vit_tiny/7", "--out", str(rnd), "--data", str(data), "--images", "6",
                 "--map-images", "2", "--no-progress"]) == 0
    a = json.loads((rnd / "analysis" / "analysis.json").read_text())
    assert a["patch_size"] == 7 and a["img_size"] == 28 and a["source"]["name"] == "random:vit_tiny/7"


def test_bad_sources_fail_in_one_line(tmp_path, capsys):
    data = small_fashion_mnist(tmp_path / "fm", train=20, test=10)
    cases = [
        (["eval", "knn", "random:vit_huge/4", "--out", str(tmp_path / "a"), "--data", str(data)], "random:PRESET"),
        (["eval", "knn", "random:vit_tiny/4", "--data", str(data)], "pass --out DIR"),
        (["eval", "knn", "timm:vit_tiny_patch16_224", "--weights", str(tmp_path / "none.pth"), "--out",
          str(tmp_path / "b"), "--data", str(data)], "no such file"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1, err


def test_finetune_of_an_encoder_with_registers_and_layerscale(tmp_path):
    data = small_fashion_mnist(tmp_path / "fm", train=64, test=20)
    model = randomise_(timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, num_classes=0, depth=2))
    w = tmp_path / "reg4.safetensors"
    save_file(model.state_dict(), str(w))
    res = tmp_path / "reg4"
    assert main(["eval", "knn", "timm:vit_small_patch14_reg4_dinov2", "--weights", str(w), "--out", str(res),
                 "--data", str(data), "--img-size", "28", "--no-progress", "--k", "5"]) == 0
    assert main(["eval", "finetune", str(res), "--steps", "2", "--train-batch", "16", "--epochs", "1",
                 "--num-workers", "0", "--no-progress"]) == 0
    r = json.loads((res / "finetune.json").read_text())
    assert r["steps"] == 2 and r["source"]["prefix_tokens"] == 5 and 0 <= r["top1"]["last"] <= 100


def test_random_of_a_run_folder_takes_its_shape_and_normalisation(tmp_path):
    from tests.helpers import tiny_config
    from unmasked.runs import load_encoder
    from unmasked.train.loop import pretrain

    data = small_fashion_mnist(tmp_path / "fm", train=64, test=20)
    pretrain(tiny_config(tmp_path, objective="mae", data=str(data), subset=None, batch_size=16, steps=1),
             progress=False)
    run = load_encoder(tmp_path / "run")
    # seed 0 would rebuild the run's own start
    rnd = load_encoder(f"random:{tmp_path / 'run'}", out=tmp_path / "rnd", seed=1)
    assert rnd.spec == run.spec and rnd.mean == run.mean and rnd.data == run.data
    assert not all((a == b).all() for a, b in zip(rnd.encoder.state_dict().values(), run.encoder.state_dict().values()))
    again = load_encoder(tmp_path / "rnd")
    assert all((a == b).all() for a, b in zip(rnd.encoder.state_dict().values(), again.encoder.state_dict().values()))
