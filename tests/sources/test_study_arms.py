"""A study with two arms that are not pretrained: a random encoder and a timm encoder with weights."""

from __future__ import annotations

import json

import pytest
import timm
from safetensors.torch import save_file

from tests.data.helpers import class_folder
from tests.sources.helpers import randomise_, small_fashion_mnist
from unmasked.cli import main
from unmasked.errors import UserError
from unmasked.runs import load_encoder
from unmasked.study.spec import load_study


def _study_file(tmp_path, data, weights) -> str:
    f = tmp_path / "s.toml"
    f.write_text(f'''seeds = [0, 1]
[recipe]
data = "{data}"
[arms.random]
encoder = "random:vit_tiny/4"
img_size = 16
[arms.public]
encoder = "timm:vit_tiny_patch16_224"
weights = "{weights}"
img_size = 32
[evals]
knn = {{ k = [5, 20], num_workers = 0 }}
analyze = {{ images = 6, map_images = 2 }}
''')
    return str(f)


@pytest.mark.slow
@pytest.mark.parametrize("data_kind", ["fashion-mnist", "folder"])
def test_a_random_arm_and_a_timm_arm_are_measured_and_reported(tmp_path, data_kind):
    if data_kind == "folder":
        data = class_folder(tmp_path / "imgs", per_class=6, size=(20, 20))
    else:
        data = small_fashion_mnist(tmp_path / "fm", train=80, test=30)
    w = tmp_path / "w.safetensors"
    save_file(randomise_(timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0,
                                           depth=2)).state_dict(), str(w))
    out = tmp_path / "study"
    assert main(["study", _study_file(tmp_path, data, w), "--out", str(out), "--no-progress"]) == 0
    knn = {s: json.loads((out / f"random_seed{s}" / "knn.json").read_text()) for s in (0, 1)}
    assert knn[0]["source"]["seed"] == 0 and knn[1]["source"]["seed"] == 1
    seed0, seed1 = (load_encoder(out / f"random_seed{s}").encoder.state_dict() for s in (0, 1))
    assert any((seed0[k] != seed1[k]).any() for k in seed0)  # another seed, another random encoder
    pub = json.loads((out / "public_seed0" / "knn.json").read_text())
    assert pub["source"]["weights"] == str(w.resolve()) and pub["transform"]["img_size"] == 32
    assert (out / "public_seed1" / "analysis" / "analysis.json").is_file()
    study = json.loads((out / "study.json").read_text())
    assert {g["arm"] for g in study["groups"]} == {"random", "public"}
    assert all(g["summary"]["knn20_cls"] is not None for g in study["groups"])
    assert any(d["metric"] == "knn20_cls" for d in study["differences"])  # public vs random, paired by seed
    md = (out / "report.md").read_text()
    assert "public" in md and "random" in md and "raw pixels" in md
    # a second invocation finds everything done
    assert main(["study", _study_file(tmp_path, data, w), "--out", str(out), "--no-progress"]) == 0


def test_an_encoder_arm_takes_no_pretraining_options(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('[arms.r]\nencoder = "random:vit_tiny/4"\nepochs = 3\n')
    with pytest.raises(UserError, match="epochs: an arm with encoder = ... is not pretrained"):
        load_study(f)
    f.write_text('[arms.r]\nencoder = "runs/x"\n')
    with pytest.raises(UserError, match="expected a source"):
        load_study(f)
    f.write_text('[arms.r]\nencoder = "random:vit_tiny/4"\n[arms.mae]\n'
                 'objective = "mae"\n[grid]\nmask_ratio = [0.5, 0.75]\n')
    with pytest.raises(UserError, match="not pretrained"):
        load_study(f)
