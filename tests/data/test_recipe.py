"""Image folders of small images get the small-image recipe; an explicit --img-size gets a warning."""

import re
import warnings

from unmasked.config import PretrainConfig, resolve_defaults
from unmasked.data.recipe import small_images, typical_side
from unmasked.train.loop import Pretrainer

from ..helpers import tiny_config
from .helpers import class_folder


def test_typical_side_is_the_median_shorter_side(tmp_path):
    root = class_folder(tmp_path / "d", per_class=3, size=(40, 30))
    assert typical_side(sorted(root.rglob("*.png"))) == (30, 6)


def test_small_images_get_the_small_recipe_and_it_is_said(tmp_path, capsys):
    root = class_folder(tmp_path / "d", per_class=4, size=(28, 28))
    cfg = PretrainConfig.flat(data=str(root))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a note for the user, not a Python warning
        small = small_images(cfg)
    err = capsys.readouterr().err
    assert re.search(r"^unmasked: note: the images in .* are about 28 px .*far below the 224 px default: using "
                     r"the small-image recipe .*--img-size 28 --patch-size 4", err)
    assert len(err.splitlines()) == 1 and ".py" not in err  # one line: no source file, no source line
    cfg = resolve_defaults(cfg, small)
    assert (cfg.img_size, cfg.patch_size, cfg.model, cfg.objective_options.decoder_width, cfg.epochs, cfg.crop) == \
           (28, 4, "vit_tiny", 128, 40, "pad")


def test_a_given_patch_size_is_kept_and_the_size_is_a_multiple_of_it(tmp_path, capsys):
    root = class_folder(tmp_path / "d", per_class=4, size=(36, 34))
    cfg = PretrainConfig.flat(data=str(root), patch_size=8)
    assert small_images(cfg)
    assert "--img-size 32 --patch-size 8" in capsys.readouterr().err
    assert resolve_defaults(cfg, True).img_size == 32


def test_an_explicit_img_size_is_kept_with_a_warning(tmp_path, capsys):
    root = class_folder(tmp_path / "d", per_class=4, size=(28, 28))
    cfg = PretrainConfig.flat(data=str(root), img_size=224)
    assert not small_images(cfg)
    assert re.search(r"^unmasked: warning: .*--img-size 224 upscales them 8x, at 64x the compute",
                     capsys.readouterr().err)
    assert resolve_defaults(cfg, False).img_size == 224


def test_images_near_the_input_size_keep_the_published_recipe(tmp_path):
    root = class_folder(tmp_path / "d", per_class=2, size=(200, 160))
    cfg = PretrainConfig.flat(data=str(root))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not small_images(cfg)
    assert resolve_defaults(cfg, False).img_size == 224


def test_pretraining_on_a_folder_of_small_images_uses_it(tmp_path, capsys):
    root = class_folder(tmp_path / "d", per_class=8, size=(28, 28))
    cfg = tiny_config(tmp_path, data=str(root), subset=None, batch_size=8, steps=1, model=None)
    t = Pretrainer(cfg, progress=False)
    err = capsys.readouterr().err
    assert "unmasked: note: " in err and "small-image recipe" in err
    assert (t.cfg.img_size, t.cfg.patch_size, t.cfg.model) == (28, 4, "vit_tiny")
    t.close()
