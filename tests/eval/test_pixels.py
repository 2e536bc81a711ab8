import torch

from unmasked.data.dataset import load_data
from unmasked.eval.knn import KS, pixel_knn
from unmasked.eval.pixels import cache_dir, pixel_rows
from unmasked.eval.view import eval_view_for

from ..data.helpers import class_folder

# The reference protocol: L2-normalised [0,1] pixels, weighted kNN with T = 0.07, full train -> test split
RAW_PIXEL_KNN = {10: 85.6, 20: 84.6, 100: 80.9, 200: 79.1}


def test_raw_pixel_knn_on_fashion_mnist_matches_the_reference(fm_root, tmp_path, monkeypatch):
    monkeypatch.setenv("UNMASKED_CACHE", str(tmp_path / "cache"))  # computed here, not by an earlier test
    ds = load_data("fashion-mnist", base_size=28, channels=1, progress=False)
    view = eval_view_for("fashion-mnist", 28)
    first = pixel_knn(ds, view, KS, 0.07)
    assert not first["cached"] and "784 values" in first["input"]
    for k, ref in RAW_PIXEL_KNN.items():
        assert abs(first["results"][str(k)]["top1"] - ref) < 0.1, (k, first["results"][str(k)])
    again = pixel_knn(ds, view, KS, 0.07)  # computed once per dataset + view + protocol
    assert again["cached"] and again["results"] == first["results"]
    assert list((cache_dir() / "pixels").glob("knn-*.json"))


def test_pixel_rows_are_the_evaluation_view(tmp_path):
    root = class_folder(tmp_path / "folder", per_class=3, size=(120, 90))
    ds = load_data(str(root), base_size=110, channels=3, progress=False)
    view = eval_view_for(str(root), 96)  # 96 / 0.875 = 110, centre crop 96
    x, y = pixel_rows(ds.train, view, 3)
    assert x.dtype == torch.uint8 and x.shape == (len(ds.train), 3 * 96 * 96)
    assert torch.equal(y, ds.train.labels)
    full = ds.train.images[:, :, 7:103, 7:103].reshape(len(ds.train), -1)
    assert torch.equal(x, full)  # stored at the view's size: a pure centre crop


def test_cache_folder_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("UNMASKED_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("UNMASKED_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "unmasked"


def test_damaged_cache_file_is_recomputed(tmp_path, monkeypatch):
    monkeypatch.setenv("UNMASKED_CACHE", str(tmp_path / "cache"))
    root = class_folder(tmp_path / "folder", per_class=4, size=(40, 40))
    ds = load_data(str(root), base_size=32, channels=3, progress=False)
    view = eval_view_for(str(root), 32)
    first = pixel_knn(ds, view, (1, 3), 0.07)
    for f in (cache_dir() / "pixels").glob("knn-*.json"):
        f.write_text("{torn")
    assert pixel_knn(ds, view, (1, 3), 0.07)["results"] == first["results"]
