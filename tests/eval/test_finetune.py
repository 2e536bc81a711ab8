import torch

from unmasked.eval.finetune import build_classifier, layer_decay_groups
from unmasked.models import build_encoder, encoder_spec
from unmasked.train.loop import pretrain

from ..helpers import tiny_config


def test_classifier_loads_pretrained_encoder_with_new_head_and_fc_norm():
    enc = build_encoder(encoder_spec("vit_tiny", 28, 4, 1, embed_dim=32, depth=2, num_heads=2))
    model = build_classifier(enc.spec.timm_kwargs(), 10, 0.1, enc.state_dict())
    assert torch.equal(model.blocks[1].mlp.fc1.weight, enc.blocks[1].mlp.fc1.weight)
    assert model.global_pool == "avg" and model.head.out_features == 10
    groups = layer_decay_groups(model, 0.05, 0.5)
    scale = {g["layer"]: g["lr_scale"] for g in groups}
    assert scale == {0: 0.125, 1: 0.25, 2: 0.5, 3: 1.0}  # embeddings < blocks < head
    trained = {id(p) for g in groups for p in g["params"]}
    assert id(model.fc_norm.weight) in trained  # the known pitfall: fc_norm must be trained


def test_finetune_smoke_run(fm_root, tmp_path):
    from unmasked.cli import main

    pretrain(tiny_config(tmp_path, steps=2), progress=False)
    run = tmp_path / "run"
    code = main(["eval", "finetune", str(run), "--no-progress", "--subset", "128", "--train-batch", "32",
                 "--epochs", "2", "--num-workers", "0", "--device", "cpu"])
    assert code == 0
    import json

    r = json.loads((run / "finetune.json").read_text())
    assert r["steps"] == 8 and len(r["history"]) == 2 and 0 <= r["top1"]["best"] <= 100
    assert r["recipe"]["layer_decay"] == 0.75 and r["recipe"]["mixup"] == 0.8
    assert (run / "finetuned.safetensors").is_file()


def _loaded(width: int, crop: str = "pad", img_size: int = 224):
    from types import SimpleNamespace

    return SimpleNamespace(spec=SimpleNamespace(embed_dim=width, img_size=img_size),
                           config=SimpleNamespace(crop=crop, pad=4))


def test_every_encoder_gets_random_resized_crops_whatever_its_pretraining_crop():
    from unmasked.eval.finetune import default_recipe

    for crop in ("pad", "rrc", "none"):
        assert default_recipe(_loaded(768, crop), "/photos").crop == "rrc"
    assert default_recipe(_loaded(192, "pad", 28), "fashion-mnist").crop == "pad"  # the small-image recipe


def test_recipe_by_size_follows_mae_and_the_lut_rule_is_available():
    from unmasked.eval.finetune import default_recipe, peak_lr

    got = {w: default_recipe(_loaded(w), "/photos") for w in (192, 768, 1024, 1280)}
    assert [got[w].drop_path for w in (768, 1024, 1280)] == [0.1, 0.2, 0.3]
    assert (got[768].base_lr, got[768].layer_decay, got[768].epochs) == (5e-4, 0.65, 100)
    assert (got[1024].base_lr, got[1024].layer_decay, got[1024].epochs) == (1e-3, 0.75, 50)
    assert got[192].drop_path == 0.1 and got[192].layer_decay == 0.75
    assert peak_lr(got[768]) == 5e-4  # batch 256: base lr x 256 / 256
    lut = default_recipe(_loaded(768), "/photos", lr_rule="lut", batch_size=1024)
    assert (lut.base_lr, lut.layer_decay, lut.lr_rule) == (1e-3, 0.75, "lut")
    assert abs(peak_lr(lut) - 1e-3 * 32 / 8) < 1e-12  # base lr x sqrt(batch) / 8
    assert default_recipe(_loaded(768), "/photos", lr_rule="lut", base_lr=2e-3).base_lr == 2e-3


def test_train_transform_is_timms_with_maes_arguments():
    from PIL import Image
    from timm.data.auto_augment import RandAugment
    from timm.data.random_erasing import RandomErasing
    from timm.data.transforms import RandomResizedCropAndInterpolation

    from unmasked.eval.finetune import FinetuneRecipe, train_transform

    tf = train_transform(FinetuneRecipe(), 32, (0.5, 0.4, 0.3), (0.2, 0.2, 0.2))
    ops = {type(t): t for t in tf.transforms}
    rrc, ra, re = ops[RandomResizedCropAndInterpolation], ops[RandAugment], ops[RandomErasing]
    assert rrc.scale == (0.08, 1.0) and ra.num_layers == 2
    assert all(op.magnitude == 9 and op.magnitude_std == 0.5 for op in ra.ops)
    assert re.probability == 0.25 and re.mode == "pixel"
    out = tf(Image.new("RGB", (80, 40), (200, 10, 10)))
    assert out.shape == (3, 32, 32)
    grey = train_transform(FinetuneRecipe(crop="pad"), 28, (0.3,), (0.3,))
    assert grey(Image.new("L", (28, 28), 90)).shape == (1, 28, 28)
    assert train_transform(FinetuneRecipe(), 28, (0.3,), (0.3,))(Image.new("L", (56, 28), 90)).shape == (1, 28, 28)


def test_help_names_maes_augmentation_and_luts_own_rule(capsys):
    import pytest

    from unmasked.cli import main

    with pytest.raises(SystemExit):
        main(["eval", "finetune", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "RandomResizedCrop(0.08-1) of the whole image" in text and "rand-m9-mstd0.5-inc1" in text
    assert "random erasing 0.25 ('pixel')" in text and "ViT-B 0.1, L 0.2, H 0.3" in text
    assert "lut: LUT's own rule, lr = base_lr * sqrt(batch) / 8 with base lr 1e-3 and layer decay 0.75" in text


def test_fine_tuning_crops_from_the_whole_stored_image():
    from unmasked.data.dataset import Split
    from unmasked.eval.finetune import _AugmentedImages

    images = torch.zeros(2, 3, 43, 43, dtype=torch.uint8)
    split = Split(images=images, labels=torch.tensor([0, 1]), extents=torch.tensor([[32, 43], [43, 32]]))
    ds = _AugmentedImages(split, 32, 3, lambda im: im.size)
    assert ds[0] == ((43, 32), torch.tensor(0)) and ds[1][0] == (32, 43)


def test_fine_tuning_streamed_from_files_crops_from_the_whole_image(tmp_path):
    from tests.data.helpers import class_folder
    from unmasked.data.dataset import load_data
    from unmasked.eval.finetune import _AugmentedImages

    root = class_folder(tmp_path / "photos", per_class=3, size=(48, 36))  # 4:3
    ds = load_data(str(root), base_size=24, progress=False, keep_aspect=True, cache_gb=0.0)
    assert not ds.train.in_memory
    aug = _AugmentedImages(ds.train, 24, 3, lambda im: im.size)
    assert [aug[i][0] for i in range(len(aug))] == [(32, 24)] * len(aug)  # whole 4:3 image, not its square


def test_a_train_batch_larger_than_the_data_names_train_batch(tmp_path, capsys):
    from tests.tiny_run import tiny_run
    from unmasked.cli import main

    run, _ = tiny_run(tmp_path)
    code = main(["eval", "finetune", str(run), "--no-progress", "--train-batch", "100000000", "--num-workers", "0",
                 "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2
    assert "--train-batch 100000000 is larger than the" in err and "--batch-size" not in err
