
import pytest
import torch

from unmasked.data.dataset import load_data
from unmasked.data.image_folder import decode, scan
from unmasked.errors import UserError

from .helpers import class_folder, write_image


def test_class_folder_layout_and_reproducible_split(tmp_path):
    class_folder(tmp_path, per_class=10)
    a = scan(tmp_path)
    b = scan(tmp_path)
    assert a.layout == "classes" and a.classes == ["cat", "dog"]
    assert len(a.heldout.files) == 2 and len(a.train.files) == 18  # 10% per class
    assert a.heldout.files == b.heldout.files
    assert not set(a.train.files) & set(a.heldout.files)


def test_train_val_layout(tmp_path):
    class_folder(tmp_path / "train", per_class=3)
    class_folder(tmp_path / "val", per_class=2)
    idx = scan(tmp_path)
    assert idx.layout == "split" and len(idx.train.files) == 6 and len(idx.heldout.files) == 4


def test_val_missing_a_class_is_an_error(tmp_path):
    class_folder(tmp_path / "train", classes=("a", "b", "c"), per_class=2)
    class_folder(tmp_path / "val", classes=("a", "b"), per_class=2)
    with pytest.raises(UserError, match=r"no images for class\(es\) c"):
        scan(tmp_path)


def test_unlabeled_folder(tmp_path):
    for i in range(4):
        write_image(tmp_path / f"img{i}.jpg", seed=i)
    idx = scan(tmp_path)
    assert idx.layout == "unlabeled" and idx.classes is None and len(idx.train.files) == 4
    data = load_data(str(tmp_path), base_size=16, progress=False)
    assert not data.labeled and data.train.images.shape == (4, 3, 16, 16)


@pytest.mark.parametrize("setup,match", [
    (lambda p: None, "no image files found"),
    (lambda p: (p / "notes.txt").write_text("hello"), "no image files found"),
])
def test_empty_folders(tmp_path, setup, match):
    setup(tmp_path)
    with pytest.raises(UserError, match=match):
        scan(tmp_path)


def test_missing_path(tmp_path):
    with pytest.raises(UserError, match="no such file or folder"):
        scan(tmp_path / "nope")


def test_corrupt_files_are_skipped_with_their_names(tmp_path, capsys):
    class_folder(tmp_path, per_class=4)
    (tmp_path / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (tmp_path / "dog" / "empty.jpg").write_bytes(b"")
    data = load_data(str(tmp_path), base_size=16, progress=False)
    msgs = [line for line in capsys.readouterr().err.splitlines() if "skipped unreadable image" in line]
    assert len(msgs) == 2 and all(m.startswith("unmasked: warning: skipped unreadable image ") for m in msgs)
    assert "broken.png" in " ".join(msgs) and "empty.jpg" in " ".join(msgs)
    assert len(data.skipped) == 2
    assert len(data.train) + len(data.heldout) == 8


def test_strict_refuses_corrupt_files(tmp_path):
    class_folder(tmp_path, per_class=3)
    (tmp_path / "cat" / "broken.png").write_bytes(b"garbage")
    with pytest.raises(UserError, match="broken.png"):
        load_data(str(tmp_path), base_size=16, strict=True, progress=False)


def test_strict_refusal_in_a_loader_worker_is_one_line(tmp_path, capsys):
    """Raised in a worker process, the refusal reaches the user as the line it was, both where the
    folder is decoded up front and where it is streamed during training."""
    from unmasked.cli import main

    data = class_folder(tmp_path / "data", per_class=8, size=(16, 16))
    for i in range(8):  # so that the first training batch holds one, wherever the split puts them
        (data / "cat" / f"broken{i}.png").write_bytes(b"garbage")
    with pytest.raises(UserError) as info:
        load_data(str(data), base_size=16, strict=True, progress=False, num_workers=2)
    assert str(info.value).startswith("bad image (--strict): ") and "broken" in str(info.value)
    assert "\n" not in str(info.value) and "worker" not in str(info.value)
    args = ["pretrain", "--no-progress", "--data", str(data), "--out", str(tmp_path / "run"), "--strict",
            "--cache-gb", "0", "--num-workers", "2", "--img-size", "16", "--patch-size", "4", "--width", "16",
            "--depth", "1", "--heads", "2", "--decoder-width", "16", "--decoder-depth", "1",
            "--decoder-heads", "2", "--batch-size", "16", "--steps", "1", "--device", "cpu",
            "--objective", "mae", "--no-memory-check"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("unmasked: error: bad image (--strict): ") and "broken" in err, err
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "LA", "1", "I;16"])
def test_modes_are_converted(tmp_path, mode):
    ext = "tif" if mode in ("CMYK", "I;16") else "png"
    p = write_image(tmp_path / f"x.{ext}", mode=mode)
    for channels in (1, 3):
        a = decode(p, 16, channels)
        assert a.shape == (channels, 16, 16) and a.dtype.name == "uint8"


def test_sixteen_bit_keeps_its_range(tmp_path):
    import numpy as np
    from PIL import Image

    a = np.full((20, 20), 65535, dtype=np.uint16)
    Image.fromarray(a).save(tmp_path / "white.png")
    assert decode(tmp_path / "white.png", 8, 1).min() == 255


def test_tiny_and_wide_images_resize_to_base(tmp_path):
    small = write_image(tmp_path / "small.png", size=(3, 2))
    wide = write_image(tmp_path / "wide.png", size=(300, 20))
    assert decode(small, 32, 3).shape == (3, 32, 32)
    assert decode(wide, 32, 3).shape == (3, 32, 32)


def test_greyscale_folder_gets_one_channel(tmp_path):
    class_folder(tmp_path, per_class=3, mode="L")
    data = load_data(str(tmp_path), base_size=16, progress=False)
    assert data.channels == 1 and data.train.images.shape[1:] == (1, 16, 16)


def test_streaming_when_over_cache_budget(tmp_path):
    class_folder(tmp_path, per_class=4)
    data = load_data(str(tmp_path), base_size=16, cache_gb=0, progress=False)
    assert not data.train.in_memory and data.train.files is not None
    from unmasked.data.loader import TrainBatches

    batches = TrainBatches(data.train, 2, 1, torch.device("cpu"), base_size=16, channels=3)
    out = list(batches.epoch(0))
    assert len(out) == len(data.train) // 2 and out[0].shape == (2, 3, 16, 16)


def test_truncated_jpeg_is_reported(tmp_path):
    from unmasked.data.image_folder import BadImage

    p = write_image(tmp_path / "photo.jpg", size=(200, 150))
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(BadImage, match="photo.jpg"):
        decode(p, 32, 3)


def test_large_photo_decodes_to_base(tmp_path):
    import numpy as np
    from PIL import Image

    a = (np.indices((3000, 4000)).sum(0) % 256).astype(np.uint8)
    Image.fromarray(a).convert("RGB").save(tmp_path / "big.jpg", quality=70)
    assert decode(tmp_path / "big.jpg", 64, 3).shape == (3, 64, 64)


def test_pretrain_on_a_messy_folder_skips_and_counts_bad_files(tmp_path, capsys):
    """Mixed modes train together; unreadable files are named and counted, training goes on."""
    from unmasked.cli import main

    root = tmp_path / "data"
    class_folder(root, classes=("a", "b"), per_class=12, size=(50, 40))
    write_image(root / "a" / "rgba.png", mode="RGBA")
    write_image(root / "b" / "cmyk.tif", mode="CMYK")
    write_image(root / "b" / "grey.png", mode="L")
    (root / "a" / "zero.jpg").write_bytes(b"")
    (root / "b" / "text.png").write_text("this is not an image")
    args = ["pretrain", "--no-progress", "--data", str(root), "--out", str(tmp_path / "run"), "--objective", "lut",
            "--img-size", "32", "--patch-size", "8", "--width", "32", "--depth", "1", "--heads", "2",
            "--decoder-width", "32", "--decoder-depth", "1", "--decoder-heads", "2", "--proj-hidden", "32",
            "--batch-size", "8", "--steps", "2", "--num-workers", "0", "--device", "cpu"]
    assert main(args) == 0
    out, named = capsys.readouterr()
    assert "zero.jpg" in named and "text.png" in named
    assert "skipped files" in out and "2 unreadable image(s)" in out


def test_exif_orientation_is_applied(tmp_path):
    """A portrait photo stored landscape with EXIF orientation 6 (rotate 90 degrees) decodes upright."""
    import numpy as np
    from PIL import Image

    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :20] = 255  # stored: left half white
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(a).save(tmp_path / "photo.jpg", exif=exif, quality=95)
    out = decode(tmp_path / "photo.jpg", 20, 1)  # upright: 20 wide, 40 tall, top half white
    upright = np.asarray(Image.open(tmp_path / "photo.jpg").transpose(Image.Transpose.ROTATE_270).convert("L"))
    assert upright.shape == (40, 20)
    assert out.shape == (1, 20, 20)
    assert out[0, :5].mean() > 200 and out[0, -5:].mean() < 50  # the crop's top is white, bottom black


def test_images_over_the_pixel_bound_are_refused_from_the_header(tmp_path):
    from unmasked.data import image_folder
    from unmasked.data.image_folder import BadImage, DecodedImages

    path = write_image(tmp_path / "big.png", size=(300, 200))
    with pytest.raises(BadImage, match=r"300x200 = 60,000 pixels, over --max-image-pixels 50,000"):
        decode(path, 16, 3, max_pixels=50_000)
    assert decode(path, 16, 3, max_pixels=60_000).shape == (3, 16, 16)
    assert image_folder.MAX_PIXELS == 100_000_000  # the stated default
    old = image_folder.MAX_PIXELS
    try:
        image_folder.set_max_image_pixels(50_000)
        ds = DecodedImages([path], 16, 3, strict=True)
    finally:
        image_folder.set_max_image_pixels(old)
    with pytest.raises(UserError, match="--max-image-pixels 50,000"):
        ds[0]  # the bound travels with the dataset (into worker processes)
