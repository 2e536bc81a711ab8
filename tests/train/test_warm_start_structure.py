"""Warm starts from an encoder with register tokens and LayerScale (as DINOv2 with registers): every
registered objective takes the source's structure and weights, trains, resumes exactly, exports a
folder timm loads, and leaves the registers out of the patch tokens and of the features."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer

from tests.data.helpers import class_folder
from tests.helpers import SMALL_HEADS, tiny_config
from tests.sources.helpers import randomise_, save_local_dir
from unmasked.analysis.analyze import attention_statistics
from unmasked.analysis.attention import attention_weights
from unmasked.cli import main
from unmasked.data.augment import eval_view
from unmasked.data.dataset import load_data
from unmasked.eval.features import extract_features, iterate_split
from unmasked.models.patches import patchify
from unmasked.objectives import registry
from unmasked.objectives.lut import mean_patch_tokens
from unmasked.runs import load_encoder
from unmasked.train import checkpoint as ckpt
from unmasked.train.loop import Pretrainer, pretrain

REGS = 2


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """(local-dir: folder of a 32-wide, 2-block timm ViT with 2 registers and LayerScale, learned
    positions on a 4 x 4 grid (16 px, patch 4), random weights; an RGB image folder)."""
    root = tmp_path_factory.mktemp("regls")
    model = randomise_(VisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2,
                                         reg_tokens=REGS, init_values=1e-5, num_classes=0))
    folder = save_local_dir(model, root / "src")
    data = class_folder(root / "imgs", per_class=6, size=(24, 24))
    return folder, data


def _opts(source, objective, **kw):
    folder, data = source
    # no --model / --width / --depth / --heads / --patch-size / --pos-embed: all from the source;
    # 24 px: a 6 x 6 training grid, the source's learned 4 x 4 positions resampled to it
    return dict(objective=objective, data=str(data), model=None, width=None, depth=None, heads=None, img_size=24,
                subset=None, batch_size=4, epochs=1, warmup_epochs=0.5, init_from=f"local-dir:{folder}",
                **SMALL_HEADS, **kw)


def _timm_at(folder, img_size):
    """What timm itself builds from the source folder at `img_size` (its checkpoint filter resamples);
    the global RNG left as it was (the run's drop path draws from it)."""
    with torch.random.fork_rng(devices=[]):
        return timm.create_model(f"local-dir:{folder}", pretrained=True, num_classes=0, img_size=img_size).eval()


@pytest.mark.parametrize("objective", registry.names())
def test_registers_and_layerscale_warm_start_trains_and_resumes_exactly(source, tmp_path, objective):
    folder, _ = source
    t = Pretrainer(tiny_config(tmp_path / "a", steps=2, **_opts(source, objective)), progress=False)
    try:
        enc = t.objective.encoder
        spec = enc.spec
        assert (spec.embed_dim, spec.depth, spec.patch_size, spec.grid) == (32, 2, 4, 6)
        assert spec.reg_tokens == REGS and spec.layer_scale > 0 and spec.pos_embed == "learned"
        assert enc.num_prefix_tokens == 1 + REGS and t.cfg.reg_tokens == REGS
        # step 0: student (and EMA teacher) hold exactly what timm loads from the source at 24 px
        ref = _timm_at(folder, 24)
        nets = [enc] + ([t.objective.teacher.encoder] if t.objective.teacher is not None else [])
        for net in nets:
            sd = net.state_dict()
            assert set(sd) == set(ref.state_dict())
            for k, v in ref.state_dict().items():
                assert torch.equal(sd[k], v), k
        x = torch.randn(3, 3, 24, 24, generator=torch.Generator().manual_seed(0))
        want = ref.forward_features(x)
        enc.eval()
        with torch.no_grad():
            torch.testing.assert_close(enc.forward_features(x), want, atol=1e-5, rtol=0)
            # the visible-token path (MAE, LUT) on every patch is the same encoder
            torch.testing.assert_close(enc.forward_visible(patchify(x, 4)), want, atol=1e-5, rtol=0)
        enc.train()
        rec = t.cfg.init_record
        assert "4x4 -> 6x6" in rec["positions"] and "trained" in rec["positions"]
        assert rec["structure"] == f"{REGS} register tokens, LayerScale from the source"
        start = {k: v.clone() for k, v in enc.state_dict().items()}
        t.fit()
    finally:
        t.close()
    # one step, a stop, a resumed second step == two steps in one go, bit for bit
    b_opts = _opts(source, objective)
    pretrain(tiny_config(tmp_path / "b", steps=1, **b_opts), progress=False)
    pretrain(tiny_config(tmp_path / "b", steps=2, **b_opts), resume=True, explicit={"out", "steps", "init_from"},
             progress=False)
    a, b = (ckpt.load_checkpoint(tmp_path / x / "run" / "checkpoint.pt") for x in "ab")
    assert a["state"]["step"] == b["state"]["step"] == 2
    assert a["objective"].keys() == b["objective"].keys()
    for k in a["objective"]:
        torch.testing.assert_close(b["objective"][k], a["objective"][k], rtol=0, atol=0, msg=k)
    assert any(not torch.equal(a["objective"][f"student.encoder.{k}"], v) for k, v in start.items()), "no step"
    assert a["encoder_spec"]["reg_tokens"] == REGS and a["config"]["reg_tokens"] == REGS
    # the trained run exports a folder timm rebuilds strictly, registers and LayerScale included
    exp = tmp_path / "exp"
    assert main(["export", str(tmp_path / "a" / "run"), "--format", "timm", str(exp)]) == 0
    args = json.loads((exp / "config.json").read_text())["model_args"]
    assert args["reg_tokens"] == REGS and args["init_values"] is not None
    model = timm.create_model(f"local-dir:{exp}", pretrained=True).eval()
    assert model.num_prefix_tokens == 1 + REGS
    run_enc = load_encoder(tmp_path / "a" / "run").encoder.eval()
    x = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), run_enc.forward_features(x), atol=1e-5, rtol=0)


def test_the_registers_stay_out_of_the_patch_tokens_features_and_attention(source, tmp_path):
    """A run warm-started from the registers source: the objective's patch tokens, the evaluation's
    mean feature and the attention analyses leave out CLS and both registers."""
    pretrain(tiny_config(tmp_path, steps=1, **_opts(source, "lut")), progress=False)
    loaded = load_encoder(tmp_path / "run")
    enc = loaded.encoder.eval()
    assert enc.num_prefix_tokens == 1 + REGS and enc.reg_token is not None
    ds = load_data(str(source[1]), base_size=24, progress=False)
    feats = extract_features(enc, ds.train, loaded.mean, loaded.std, 1.0, torch.device("cpu"), base=ds.base_size,
                             channels=3, progress=False)
    images, _ = next(iter(iterate_split(ds.train, 256, ds.base_size, 3)))
    x = eval_view(images, 24, loaded.mean, loaded.std, 1.0)
    with torch.no_grad():
        tokens = enc.forward_features(x)
    assert tokens.shape[1] == 1 + REGS + 36
    torch.testing.assert_close(feats["cls"], tokens[:, 0])
    torch.testing.assert_close(feats["mean"], tokens[:, 1 + REGS:].mean(1))
    assert not torch.allclose(feats["mean"], tokens[:, 1:].mean(1), atol=1e-4)  # the registers matter
    torch.testing.assert_close(mean_patch_tokens(tokens, enc.num_prefix_tokens), tokens[:, 1 + REGS:].mean(1))
    # attention: each map is over all tokens; the statistics use the 36 x 36 patch block only
    maps = attention_weights(enc, x[:2])
    assert maps[0].shape[-1] == 1 + REGS + 36
    stats = attention_statistics(enc, x[:2], batch_size=2, progress=False)
    assert stats["distance_per_head"].shape == (2, 2)


def test_dinov2_with_registers_by_name_warm_starts_with_its_layout(tmp_path):
    """timm:vit_small_patch14_reg4_dinov2 with a weights file: 4 registers without positions
    (no_embed_class), LayerScale, patch 14; the student equals timm's own model of that file."""
    name = "vit_small_patch14_reg4_dinov2"
    reg = randomise_(timm.create_model(name, pretrained=False, num_classes=0, depth=1))
    w = tmp_path / "reg.safetensors"
    save_file(reg.state_dict(), str(w))
    data = class_folder(tmp_path / "imgs", per_class=4, size=(28, 28))
    cfg = tiny_config(tmp_path, objective="dinov2", data=str(data), model=None, width=None, depth=None,
                      heads=None, img_size=28, subset=None, batch_size=4, init_from=f"timm:{name}", weights=str(w),
                      **SMALL_HEADS)
    t = Pretrainer(cfg, progress=False)
    try:
        spec = t.objective.encoder.spec
        assert (spec.embed_dim, spec.depth, spec.patch_size, spec.reg_tokens, spec.no_embed_class) == \
            (384, 1, 14, 4, True)
        ref = timm.create_model(name, pretrained=True, num_classes=0, depth=1, img_size=28,
                                pretrained_cfg_overlay=dict(file=str(w))).eval()
        x = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(0))
        enc = t.objective.teacher.encoder
        with torch.no_grad():
            torch.testing.assert_close(enc.forward_features(x), ref.forward_features(x), atol=1e-5, rtol=0)
            # the student's own path at any size (its local crops) keeps the registers position-free
            torch.testing.assert_close(t.objective.encoder.eval().forward_image(x), ref.forward_features(x),
                                       atol=1e-5, rtol=0)
    finally:
        t.close()
