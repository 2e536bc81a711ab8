"""A folder that looks labeled but is read otherwise is announced in one line, with the labeled layout."""

import pytest

from unmasked.data.image_folder import scan

from .helpers import class_folder, write_image


def _train_only(root):
    class_folder(root / "train", per_class=2)


def _single_class(root):
    class_folder(root, classes=("cat",), per_class=3)


def _stray_image(root):
    class_folder(root, per_class=2)
    write_image(root / "stray.jpg")


def _splits_without_classes(root):
    for split in ("train", "val"):
        for i in range(2):
            write_image(root / split / f"{i}.png", seed=i)


@pytest.mark.parametrize("make,layout,words", [
    (_train_only, "unlabeled", "has train/ but no val/, so it is read as unlabeled"),
    (_single_class, "unlabeled", "a single class folder (cat/), so it is read as unlabeled"),
    (_stray_image, "unlabeled", "1 image(s) at the top level (e.g. stray.jpg) beside 2 folder(s)"),
    (_splits_without_classes, "classes", "train/ and val/ hold images but no class folders"),
])
def test_near_miss_layouts_are_announced_in_one_line(tmp_path, capsys, make, layout, words):
    make(tmp_path)
    index = scan(tmp_path)
    err = capsys.readouterr().err
    assert index.layout == layout and words in index.note
    assert err.count("\n") == 1 and err.startswith(f"unmasked: note: {tmp_path}: ") and words in err
    assert "root/<class>/" in err and "root/train/<class>/ + root/val/<class>/" in err


def test_labeled_layouts_and_an_explicit_unlabeled_choice_say_nothing(tmp_path, capsys):
    class_folder(tmp_path / "a", per_class=2)
    class_folder(tmp_path / "b" / "train", per_class=2)
    class_folder(tmp_path / "b" / "val", per_class=2)
    write_image(tmp_path / "c" / "one.png")
    _single_class(tmp_path / "d")
    for root, unlabeled in (("a", False), ("b", False), ("c", False), ("d", True)):
        assert scan(tmp_path / root, unlabeled=unlabeled).note is None
    assert capsys.readouterr().err == ""
