from unmasked.eval.view import eval_view_for


def test_one_view_per_dataset_whatever_the_training_crop():
    """Image folders: shorter side to img / 0.875, centre crop img (256 -> 224 at 224 px)."""
    v = eval_view_for("/some/folder", 224)
    assert (v.base_size, v.crop_pct) == (256, 0.875)
    d = v.describe()
    assert (d["resize"], d["crop"]) == (256, 224) and "centre crop 224" in d["description"]


def test_small_data_is_seen_whole():
    fm = eval_view_for("fashion-mnist", 28)
    assert (fm.base_size, fm.crop_pct) == (28, 1.0) and fm.describe()["description"] == "native 28 px image"
    assert eval_view_for("fashion-mnist", 32).describe()["description"] == "native 28 px image resized to 32"
    small = eval_view_for("/cifar-like", 32)
    assert (small.base_size, small.crop_pct) == (32, 1.0)
