"""`embed` and `show` take any source directly, as the evaluations do: timm:NAME with --weights,
local-dir:, random:PRESET (seeded, with --data); their outputs name the source."""

from __future__ import annotations

import csv
import json

import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from tests.data.helpers import class_folder
from tests.sources.helpers import randomise_
from unmasked.cli import main
from unmasked.data.augment import eval_view
from unmasked.data.image_folder import decode

NAME = "vit_tiny_patch16_224"


@pytest.fixture()
def weights(tmp_path):
    f = tmp_path / "tiny.safetensors"
    save_file(randomise_(timm.create_model(NAME, pretrained=False, num_classes=0, depth=2)).state_dict(), str(f))
    return f


def test_embed_of_a_timm_file_equals_timms_own_forward(tmp_path, weights, capsys):
    data = class_folder(tmp_path / "imgs", per_class=4, size=(32, 32))
    out = tmp_path / "emb.safetensors"
    assert main(["embed", f"timm:{NAME}", "--weights", str(weights), "--img-size", "32", "--data", str(data),
                 "--out", str(out), "--no-progress", "--num-workers", "0"]) == 0
    assert "embedded 8 images" in capsys.readouterr().out
    t = load_file(out)
    with open(tmp_path / "emb.csv") as f:
        rows = list(csv.DictReader(f))
    with safe_open(out, "pt") as f:
        meta = f.metadata()
    info = json.loads(meta["source_info"])
    assert meta["source"] == f"timm:{NAME}" and info["weights"] == str(weights.resolve())
    assert info["prefix_tokens"] == 1 and json.loads(meta["transform"])["img_size"] == 32

    ref = timm.create_model(NAME, pretrained=True, num_classes=0, depth=2, img_size=32,
                            pretrained_cfg_overlay=dict(file=str(weights))).eval()
    img = torch.from_numpy(decode(rows[3]["file"], 32, 3))[None]
    x = eval_view(img, 32, ref.pretrained_cfg["mean"], ref.pretrained_cfg["std"], 1.0)
    with torch.no_grad():
        tokens = ref.forward_features(x)
    torch.testing.assert_close(t["cls"][3], tokens[0, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(t["mean"][3], tokens[0, 1:].mean(0), atol=1e-5, rtol=0)


def test_embed_of_a_random_encoder_is_seeded(tmp_path):
    data = class_folder(tmp_path / "imgs", per_class=3, size=(16, 16), mode="L")
    common = ["--data", str(data), "--img-size", "16", "--no-progress", "--num-workers", "0"]
    files = {}
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        files[name] = tmp_path / f"{name}.safetensors"
        assert main(["embed", "random:vit_tiny/4", "--seed", seed, "--out", str(files[name]), *common]) == 0
    a, b, c = (load_file(files[k])["cls"] for k in "abc")
    assert a.shape == (6, 192) and torch.equal(a, b) and not torch.allclose(a, c)


def test_show_of_a_timm_file_and_of_a_random_encoder(tmp_path, weights):
    pytest.importorskip("matplotlib")
    data = class_folder(tmp_path / "imgs", per_class=2, size=(40, 30))
    img = data / "cat" / "0.png"
    out = tmp_path / "fig"
    assert main(["show", f"timm:{NAME}", str(img), "--weights", str(weights), "--img-size", "32", "--out",
                 str(out), "--device", "cpu"]) == 0
    r = json.loads((out / "show.json").read_text())
    assert r["source_info"]["name"] == f"timm:{NAME}" and r["input_size"] == [32, 32] and r["grid"] == [2, 2]
    assert r["images"][0]["heads"] == 3 and not r["images"][0]["reconstruction"] and r["started_from"] is None
    assert main(["show", "random:vit_tiny/8", str(img), "--data", str(data), "--img-size", "32", "--out",
                 str(out), "--device", "cpu"]) == 0
    r = json.loads((out / "show.json").read_text())
    assert r["source_info"]["seed"] == 0 and r["grid"] == [4, 4]


def test_source_options_with_a_run_folder_or_without_data_fail_in_one_line(tmp_path, capsys):
    from tests.tiny_run import tiny_run

    run, data = tiny_run(tmp_path / "r")
    out = str(tmp_path / "e.safetensors")
    for args, expected in (
        (["embed", str(run), "--img-size", "32", "--out", out], "--img-size 32: only for a timm:"),
        (["embed", str(run), "--weights", out, "--out", out], "only for a timm:NAME source"),
        (["show", "random:vit_tiny/4", str(data / "cat" / "0.png"), "--out", str(tmp_path / "f")], "pass --data"),
    ):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1, err


@pytest.mark.parametrize("objective", ["lut", "mae", "dinov2"])
def test_random_of_a_shape_at_a_seed_is_the_step_0_encoder_of_a_run_of_that_shape(tmp_path, objective):
    """random:WIDTHxDEPTHxHEADS/PATCH (the demo's random:128x6x4/7): what pretraining started from."""
    from tests.helpers import SMALL_HEADS, tiny_config
    from tests.sources.helpers import small_fashion_mnist
    from unmasked.errors import UserError
    from unmasked.runs import open_encoder
    from unmasked.train.loop import Pretrainer

    data = small_fashion_mnist(tmp_path / "fm", train=64, test=20)
    # a random: encoder is a plain ViT (fixed sin-cos positions, no LayerScale), as fm-cpu's DINOv2 arm pins
    plain = {"layer_scale": 0.0, "pos_embed": "sincos"} if objective == "dinov2" else {}
    t = Pretrainer(tiny_config(tmp_path, objective=objective, data=str(data), subset=None, batch_size=16, seed=1,
                               **SMALL_HEADS, **plain), progress=False)
    rnd = open_encoder("random:32x2x2/4", data=str(data), seed=1)
    from dataclasses import replace

    # the same encoder; DINOv2's default stochastic depth (0.1) is a training setting, not a weight
    assert rnd.spec == replace(t.objective.encoder.spec, drop_path_rate=0.0) and rnd.mean == pytest.approx(t.cfg.mean)
    start = t.objective.encoder.state_dict()
    assert all(torch.equal(v, start[k]) for k, v in rnd.encoder.state_dict().items())
    with pytest.raises(UserError, match="random:30x2x4/4: width 30 must be divisible by the 4 heads"):
        open_encoder("random:30x2x4/4", data=str(data))
