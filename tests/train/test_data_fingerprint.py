"""A resume after the training folder changed is refused, naming the change."""

import pytest

from unmasked.errors import UserError
from unmasked.train.data_fingerprint import check_same_data
from unmasked.train.loop import pretrain

from ..data.helpers import class_folder, write_image
from ..helpers import tiny_config


def _config(tmp_path, data, **kw):
    return tiny_config(tmp_path, data=str(data), subset=None, batch_size=4, img_size=28, patch_size=4,
                       num_workers=0, **kw)


def test_resume_after_images_were_added_is_refused(tmp_path):
    data = class_folder(tmp_path / "images", per_class=6, size=(28, 28))
    pretrain(_config(tmp_path, data, steps=1), progress=False)
    for i in range(2):
        write_image(data / "cat" / f"new{i}.png", size=(28, 28), seed=50 + i)
    with pytest.raises(UserError, match=r"training data of .*run changed: 12 training images now, 10 when the run "
                                        r"started \(\+2\).*--init-from"):
        pretrain(_config(tmp_path, data, steps=2), resume=True, explicit={"steps"}, progress=False)


def test_resume_with_unchanged_data_goes_on(tmp_path):
    data = class_folder(tmp_path / "images", per_class=6, size=(28, 28))
    pretrain(_config(tmp_path, data, steps=1), progress=False)
    summary = pretrain(_config(tmp_path, data, steps=2), resume=True, explicit={"steps"}, progress=False)
    assert summary["steps"] == 2


def test_renamed_files_with_the_same_count_are_named_as_such(tmp_path):
    saved = {"train_images": 10, "train_files": 10, "names": "a"}
    with pytest.raises(UserError, match=r"the same number of training images \(10\) but different file names"):
        check_same_data(saved, {**saved, "names": "b"}, tmp_path)
    check_same_data(None, saved, tmp_path)  # checkpoints from before the record: nothing to compare
