"""`unmasked embed`: every image once, CLS and mean-pooled rows equal to the encoder's own output,
a CSV that names each row's file and label, and a content-keyed cache."""

import csv
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tests.data.helpers import write_image
from unmasked.cli import main
from unmasked.data.augment import eval_view
from unmasked.data.image_folder import decode
from unmasked.runs import load_encoder

from ..tiny_run import tiny_run


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("embed"))


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_every_image_embedded_once_with_its_file_and_label(tiny, tmp_path, capsys):
    run, data = tiny
    out = tmp_path / "emb.safetensors"
    assert main(["embed", str(run), "--data", str(data), "--out", str(out), "--no-progress"]) == 0
    assert "embedded 12 images" in capsys.readouterr().out
    t = load_file(out)
    rows = _rows(tmp_path / "emb.csv")
    files = sorted(str(p) for p in data.rglob("*.png"))
    assert sorted(r["file"] for r in rows) == files and [int(r["row"]) for r in rows] == list(range(12))
    assert {r["split"] for r in rows} == {"train", "val"}
    assert t["cls"].shape == (12, 32) and t["mean"].shape == (12, 32) and t["labels"].tolist() == [
        int(r["label"]) for r in rows]
    assert all(r["class"] == ("cat", "dog")[int(r["label"])] and f"/{r['class']}/" in r["file"] for r in rows)
    with safe_open(out, "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["transform"])["img_size"] == 16 and meta["rows"] == "emb.csv"

    # row 5 is the encoder on that file's evaluation view (16 px: the whole image, resized)
    loaded = load_encoder(run)
    img = torch.from_numpy(decode(rows[5]["file"], 16, 3))[None]
    x = eval_view(img, 16, loaded.mean, loaded.std, 1.0)
    with torch.no_grad():
        tokens = loaded.encoder.eval().forward_features(x)
    torch.testing.assert_close(t["cls"][5], tokens[0, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(t["mean"][5], tokens[0, 1:].mean(0), atol=1e-5, rtol=0)


def test_second_embed_reads_the_cache_and_a_changed_image_is_recomputed(tiny, tmp_path, capsys):
    from unmasked.eval.embed import embed

    run, data = tiny
    out = tmp_path / "e.safetensors"
    embed(run, out, data=str(data), progress=False)
    again = embed(run, out, data=str(data), progress=False)
    assert again["cached"] == {"train": True, "val": True}
    before = load_file(out)
    changed = sorted(data.rglob("*.png"))[0]
    write_image(changed, seed=1234, size=(40, 30))
    r = embed(run, out, data=str(data), progress=False)
    assert not all(r["cached"].values())  # the split with the rewritten file
    rows = _rows(tmp_path / "e.csv")
    i = next(int(x["row"]) for x in rows if x["file"] == str(changed))
    assert not torch.allclose(load_file(out)["cls"][i], before["cls"][i])


def test_unlabeled_folder_and_unreadable_file(tiny, tmp_path, capsys):
    from unmasked.eval.embed import embed

    run, _ = tiny
    flat = tmp_path / "flat"
    for i in range(3):
        write_image(flat / f"{i}.png", seed=i, size=(20, 50))
    (flat / "broken.png").write_bytes(b"not an image")
    r = embed(run, tmp_path / "u.safetensors", data=str(flat), progress=False)
    assert "unmasked: warning: skipped unreadable image" in capsys.readouterr().err
    assert r["images"] == 3 and "labels" not in load_file(tmp_path / "u.safetensors")
    assert all(x["label"] == "" and x["class"] == "" for x in _rows(tmp_path / "u.csv"))


def test_bad_out_and_missing_source_refused_in_one_line(tiny, tmp_path, capsys):
    run, data = tiny
    assert main(["embed", str(run), "--data", str(data), "--out", str(tmp_path)]) == 2
    assert "a folder; embed writes one file" in capsys.readouterr().err
    assert main(["embed", str(run), "--data", str(data), "--out", str(tmp_path / "e.pt")]) == 2
    assert "expected a .safetensors file name" in capsys.readouterr().err
    assert main(["embed", str(tmp_path / "nope"), "--out", str(tmp_path / "e.safetensors")]) == 2
    assert "no such run folder or file" in capsys.readouterr().err


def test_fashion_mnist_rows_are_named_by_split_and_index():
    from unmasked.data.dataset import ImageData, Split
    from unmasked.eval.embed import _file_names

    ds = ImageData("fashion-mnist", 1, 28, ["a"], Split(torch.zeros(3, 1, 28, 28, dtype=torch.uint8)), None)
    assert _file_names(ds, "test", ds.train, torch.tensor([0, 2])) == ["fashion-mnist:test:0", "fashion-mnist:test:2"]
