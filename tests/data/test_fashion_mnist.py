import gzip
import shutil

import pytest

from unmasked.data import fashion_mnist
from unmasked.data.dataset import load_data
from unmasked.errors import UserError


def test_loads_debian_package(fm_root):
    data = load_data("fashion-mnist")
    assert data.train.images.shape == (60000, 1, 28, 28)
    assert data.heldout.images.shape == (10000, 1, 28, 28)
    assert data.train.labels.bincount().tolist() == [6000] * 10
    assert data.classes[9] == "Ankle boot" and data.heldout_name == "test"


def test_subset_is_reproducible(fm_root):
    a = load_data("fashion-mnist", subset=100, subset_seed=3)
    b = load_data("fashion-mnist", subset=100, subset_seed=3)
    assert len(a.train) == 100 and (a.train.images == b.train.images).all()


def _copy_uncompressed(src, dst):
    dst.mkdir()
    for stem in fashion_mnist.FILES.values():
        with gzip.open(src / f"{stem}.gz", "rb") as f, open(dst / stem, "wb") as g:
            shutil.copyfileobj(f, g)


def test_folder_with_uncompressed_idx_files(fm_root, tmp_path):
    _copy_uncompressed(fm_root, tmp_path / "fm")
    data = load_data(str(tmp_path / "fm"))
    assert len(data.train) == 60000 and data.name == "fashion-mnist"


def test_bad_magic_number_is_named(fm_root, tmp_path):
    _copy_uncompressed(fm_root, tmp_path / "fm")
    p = tmp_path / "fm" / "train-images-idx3-ubyte"
    raw = bytearray(p.read_bytes())
    raw[2:4] = b"\x09\x99"
    p.write_bytes(bytes(raw))
    with pytest.raises(UserError, match=r"train-images-idx3-ubyte has magic number .* expected 2051"):
        load_data(str(tmp_path / "fm"))


def test_truncated_file_is_named(fm_root, tmp_path):
    _copy_uncompressed(fm_root, tmp_path / "fm")
    p = tmp_path / "fm" / "t10k-labels-idx1-ubyte"
    p.write_bytes(p.read_bytes()[:5000])
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte is truncated"):
        load_data(str(tmp_path / "fm"))


def test_missing_files_say_how_to_install(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="apt-get install -y dataset-fashion-mnist"):
        fashion_mnist.locate(tmp_path)
