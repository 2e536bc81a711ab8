"""Official checkpoint layouts (MAE, DINO, DINOv2 with registers) load through `timm:NAME --weights`
and give the features of the timm model they were made from.

Each checkpoint is a timm model of that architecture (depth 2) with random weights, renamed to the
official key names and shapes (facebookresearch/mae models_mae.py, dino vision_transformer.py,
dinov2 models/vision_transformer.py)."""

from __future__ import annotations

import pickle

import pytest
import timm
import torch
from safetensors.torch import save_file

from tests.sources.helpers import randomise_
from unmasked.errors import UserError
from unmasked.models.vit import encoder_tokens, num_prefix_tokens, pooled_features
from unmasked.runs import load_encoder
from unmasked.sources import sha256_of


def _reference(name: str, seed: int = 0, **kwargs):
    return randomise_(timm.create_model(name, pretrained=False, num_classes=0, depth=2, **kwargs), seed)


def _same_features(loaded, ref, size: int, prefix: int) -> None:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = pooled_features(encoder_tokens(loaded.encoder.eval(), x), num_prefix_tokens(loaded.encoder))
        want_tokens = ref.forward_features(x)
    want = {"cls": want_tokens[:, 0], "mean": want_tokens[:, prefix:].mean(1)}
    assert num_prefix_tokens(loaded.encoder) == prefix
    for k in ("cls", "mean"):
        torch.testing.assert_close(got[k], want[k], atol=1e-5, rtol=0)
    torch.testing.assert_close(got["cls"], ref(x), atol=1e-5, rtol=0)  # timm's own head: the CLS token


def test_dinov2_with_registers_layerscale_and_a_37x37_grid(tmp_path):
    ref = _reference("vit_small_patch14_reg4_dinov2")
    sd = ref.state_dict()
    d = sd["cls_token"].shape[-1]
    p0 = torch.randn(1, 1, d)  # DINOv2 stores a CLS position; timm's register model folds it into CLS
    official = {k: v for k, v in sd.items() if k not in ("reg_token", "cls_token", "pos_embed")}
    official.update(register_tokens=sd["reg_token"], cls_token=sd["cls_token"] - p0,
                    pos_embed=torch.cat([p0, sd["pos_embed"]], 1), mask_token=torch.zeros(1, d))
    assert official["pos_embed"].shape == (1, 1 + 37 * 37, d) and "blocks.0.ls1.gamma" in official
    assert official["register_tokens"].shape == (1, 4, d)
    f = tmp_path / "dinov2_vits14_reg4_pretrain.pth"
    torch.save(official, f)
    loaded = load_encoder("timm:vit_small_patch14_reg4_dinov2", weights=str(f), out=tmp_path / "res",
                          data="fashion-mnist")
    assert loaded.spec.img_size == 518 and loaded.spec.patch_size == 14 and loaded.spec.depth == 2
    _same_features(loaded, ref, 518, prefix=5)
    info = loaded.source_info
    assert info["weights_sha256"] == sha256_of(f) and info["prefix_tokens"] == 5
    assert info["normalisation"]["mean"] == list(ref.pretrained_cfg["mean"])


def test_dinov2_positions_are_resampled_to_another_evaluation_size(tmp_path):
    ref = _reference("vit_small_patch14_dinov2")
    official = {**ref.state_dict(), "mask_token": torch.zeros(1, 384)}
    f = tmp_path / "dinov2.safetensors"
    save_file(official, str(f))
    loaded = load_encoder("timm:vit_small_patch14_dinov2", weights=str(f), out=tmp_path / "res",
                          data="fashion-mnist", img_size=56)
    assert loaded.spec.img_size == 56 and loaded.encoder.pos_embed.shape[1] == 1 + 4 * 4
    small = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, depth=2, img_size=56)
    small.load_state_dict(timm.models.vision_transformer.checkpoint_filter_fn(dict(official), small))
    _same_features(loaded, small.eval(), 56, prefix=1)


def test_mae_checkpoint_with_its_decoder(tmp_path):
    ref = _reference("vit_base_patch16_224.mae")
    sd = ref.state_dict()
    dec = 512
    official = {"model": {**sd, "mask_token": torch.zeros(1, 1, dec),
                          "decoder_embed.weight": torch.randn(dec, 768), "decoder_embed.bias": torch.zeros(dec),
                          "decoder_pos_embed": torch.zeros(1, 197, dec),
                          "decoder_blocks.0.norm1.weight": torch.ones(dec),
                          "decoder_blocks.0.attn.qkv.weight": torch.randn(3 * dec, dec),
                          "decoder_norm.weight": torch.ones(dec), "decoder_norm.bias": torch.zeros(dec),
                          "decoder_pred.weight": torch.randn(16 * 16 * 3, dec),
                          "decoder_pred.bias": torch.zeros(16 * 16 * 3)}}
    f = tmp_path / "mae_visualize_vit_base.pth"
    torch.save(official, f)
    loaded = load_encoder("timm:vit_base_patch16_224.mae", weights=str(f), out=tmp_path / "res", data="fashion-mnist")
    _same_features(loaded, ref, 224, prefix=1)


@pytest.mark.parametrize("layout", ["released", "training"])
def test_dino_released_backbone_and_training_checkpoint(tmp_path, layout):
    ref = _reference("vit_small_patch16_224.dino")
    sd = ref.state_dict()
    if layout == "released":
        official = sd
    else:  # main_dino.py's checkpoint: student (DDP) and teacher, each a backbone and a DINO head
        official = {"student": {f"module.backbone.{k}": v + 1 for k, v in sd.items()},
                    "teacher": {**{f"backbone.{k}": v for k, v in sd.items()},
                                "head.mlp.0.weight": torch.randn(64, 384),
                                "head.last_layer.weight_g": torch.ones(8, 1)},
                    "epoch": 100}
    f = tmp_path / "dino.pth"
    torch.save(official, f)
    loaded = load_encoder("timm:vit_small_patch16_224.dino", weights=str(f), out=tmp_path / "res",
                          data="fashion-mnist")
    _same_features(loaded, ref, 224, prefix=1)


class _Evil:
    def __reduce__(self):
        return (print, ("this ran",))


def test_a_pickle_needing_arbitrary_objects_is_refused_naming_the_risk(tmp_path):
    f = tmp_path / "evil.pth"
    with open(f, "wb") as fh:
        pickle.dump({"model": _Evil()}, fh)
    with pytest.raises(UserError, match="refused.*execute code"):
        load_encoder("timm:vit_small_patch16_224.dino", weights=str(f), out=tmp_path / "res", data="fashion-mnist")


def test_weights_of_another_shape_fail_in_one_line(tmp_path):
    ref = _reference("vit_tiny_patch16_224")
    f = tmp_path / "tiny.safetensors"
    save_file(ref.state_dict(), str(f))
    with pytest.raises(UserError, match="does not fit vit_small_patch16_224"):
        load_encoder("timm:vit_small_patch16_224", weights=str(f), out=tmp_path / "res", data="fashion-mnist")


def test_a_download_without_network_names_the_file_to_pass(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(UserError) as e:
        load_encoder("timm:vit_tiny_patch16_224.augreg_in21k", out=tmp_path / "res", data="fashion-mnist")
    msg = str(e.value)
    assert "--weights" in msg and "huggingface.co/timm/vit_tiny_patch16_224.augreg_in21k" in msg
    assert "\n" not in msg
    # a hub source takes no --weights: its offline form is a folder of the repository's files
    with pytest.raises(UserError) as e:
        load_encoder("hf-hub:timm/vit_tiny_patch16_224.augreg_in21k", out=tmp_path / "res2", data="fashion-mnist")
    msg = str(e.value)
    assert "huggingface.co/timm/vit_tiny_patch16_224.augreg_in21k" in msg and "local-dir:FOLDER" in msg
    assert "--weights" not in msg and "\n" not in msg


def test_local_dir_and_unknown_names(tmp_path):
    from timm.models import save_for_hf

    ref = _reference("vit_tiny_patch16_224", img_size=32)
    save_for_hf(ref, str(tmp_path / "hf"), model_config={"model_args": {"depth": 2, "img_size": 32}})
    loaded = load_encoder(f"local-dir:{tmp_path / 'hf'}", out=tmp_path / "res", data="fashion-mnist")
    _same_features(loaded, ref, 32, prefix=1)
    with pytest.raises(UserError, match="timm has no model"):
        load_encoder("timm:no_such_vit", out=tmp_path / "res2", data="fashion-mnist")
    with pytest.raises(UserError, match="pass --out"):
        load_encoder("random:vit_tiny/4", data="fashion-mnist")
