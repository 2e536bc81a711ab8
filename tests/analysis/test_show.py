"""`unmasked show`: one figure per image (any size), CLS attention per head without prefix tokens,
PCA of the patch features, and the reconstruction of a masked view for MAE runs."""

import builtins
import json

import pytest
import torch

from tests.data.helpers import write_image
from unmasked.analysis import show as show_mod
from unmasked.cli import main
from unmasked.errors import UserError

from ..tiny_run import tiny_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("show"))[0]


def test_one_figure_per_image_of_any_size_with_the_aspect_stated(run, tmp_path, capsys):
    wide = write_image(tmp_path / "a" / "wide.png", size=(64, 20))
    tall = write_image(tmp_path / "b" / "wide.png", size=(9, 33), mode="L", seed=3)  # same name, grey
    out = tmp_path / "figs"
    assert main(["show", str(run), str(wide), str(tall), "--out", str(out), "--device", "cpu"]) == 0
    assert "2 figure(s)" in capsys.readouterr().out
    r = json.loads((out / "show.json").read_text())
    assert [e["figure"] for e in r["images"]] == ["wide.png", "wide-2.png"]
    assert r["input_size"] == [16, 16] and r["grid"] == [4, 4]
    assert r["images"][0]["input"] == "64x20 px resized to 51x16, centre 16x16 kept"
    assert all(e["heads"] == 2 and e["reconstruction"] for e in r["images"])  # an MAE run
    for e in r["images"]:
        assert (out / e["figure"]).stat().st_size > 5000
    assert main(["show", str(run), str(wide), "--out", str(out), "--aspect", "pad"]) == 0
    assert "resized to 16x5, padded to 16x16" in json.loads((out / "show.json").read_text())["images"][0]["input"]


def test_bad_inputs_refused_in_one_line(run, tmp_path, capsys):
    good = write_image(tmp_path / "ok.png")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really")
    assert main(["show", str(run), str(good), str(broken), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "broken.jpg: not a readable image" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()  # checked before anything is written
    assert main(["show", str(run), str(tmp_path / "missing.png"), "--out", str(tmp_path / "o")]) == 2
    assert "missing.png: no such image file" in capsys.readouterr().err
    assert main(["show", str(run), str(good), "--out", str(good)]) == 2
    assert "a file; show writes its figures into a folder" in capsys.readouterr().err
    assert main(["show", str(tmp_path / "norun"), str(good), "--out", str(tmp_path / "o")]) == 2
    assert "no such run folder or file" in capsys.readouterr().err


def test_missing_matplotlib_is_one_clear_error(monkeypatch):
    real = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(UserError, match="matplotlib, which is not installed: pip install"):
        show_mod.pyplot()


def test_cls_attention_leaves_registers_out_and_sums_to_one():
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    enc = VisionTransformer(img_size=28, patch_size=14, embed_dim=24, depth=2, num_heads=3, num_classes=0,
                            reg_tokens=4, init_values=1e-5).eval()
    a = show_mod.cls_attention(enc, torch.randn(1, 3, 28, 28))
    assert a.shape == (3, 4)  # 3 heads x 2 x 2 patches, not 1 + 4 + 4 tokens
    torch.testing.assert_close(a.sum(-1), torch.ones(3))


def test_pca_colours_separate_two_kinds_of_patch():
    torch.manual_seed(0)
    a, b = torch.randn(16), torch.randn(16)
    feats = torch.stack([a if i % 4 < 2 else b for i in range(16)]) + 0.01 * torch.randn(16, 16)
    rgb = show_mod.pca_rgb(feats, (4, 4))
    assert rgb.shape == (4, 4, 3) and rgb.min() >= 0 and rgb.max() <= 1
    first = rgb[..., 0]
    assert abs(first[:, :2].mean() - first[:, 2:].mean()) > 0.9  # left and right halves at opposite ends
    assert (show_mod.pca_rgb(feats, (4, 4)) == rgb).all()
