"""Feature-cache keys follow content (pixels, files, labels, weights, transform), not paths and counts."""

import os

import torch

from unmasked.data.dataset import Split
from unmasked.eval.cache_key import feature_cache_key, split_fingerprint, weights_fingerprint

from ..data.helpers import write_image

TRANSFORM = {"img_size": 28, "crop_pct": 1.0}


def test_one_changed_pixel_or_label_changes_the_key():
    images = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    labels = torch.tensor([0, 1, 0, 1])
    enc = torch.nn.Linear(2, 2)
    key = feature_cache_key("train", Split(images, labels=labels), enc, TRANSFORM)
    assert key == feature_cache_key("train", Split(images.clone(), labels=labels.clone()), enc, TRANSFORM)
    changed = images.clone()
    changed[3, 0, 7, 7] = 1
    assert key != feature_cache_key("train", Split(changed, labels=labels), enc, TRANSFORM)
    assert key != feature_cache_key("train", Split(images, labels=labels.flip(0)), enc, TRANSFORM)
    assert key != feature_cache_key("heldout", Split(images, labels=labels), enc, TRANSFORM)
    assert key != feature_cache_key("train", Split(images, labels=labels), enc, {**TRANSFORM, "crop_pct": 0.875})


def test_a_replaced_file_with_the_same_name_and_count_changes_the_key(tmp_path):
    files = [write_image(tmp_path / f"{i}.png", seed=i) for i in range(3)]
    before = split_fingerprint(Split(files=files, labels=torch.tensor([0, 1, 0])))
    write_image(files[1], seed=99, size=(41, 30))
    assert split_fingerprint(Split(files=files, labels=torch.tensor([0, 1, 0]))) != before
    same_size = split_fingerprint(Split(files=files, labels=torch.tensor([0, 1, 0])))
    st = files[2].stat()
    os.utime(files[2], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # rewritten, same size
    assert split_fingerprint(Split(files=files, labels=torch.tensor([0, 1, 0]))) != same_size


def test_any_changed_weight_changes_the_weights_fingerprint():
    torch.manual_seed(0)
    enc = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.LayerNorm(3)).to(torch.bfloat16)
    before = weights_fingerprint(enc)
    with torch.no_grad():
        enc[1].bias[2] += 1
    assert weights_fingerprint(enc) != before
