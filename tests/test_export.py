"""`unmasked export RUN --format timm DIR`: timm loads the folder unchanged, with equal features."""

import json

import pytest
import timm
import torch
from safetensors.torch import load_file

from unmasked import export
from unmasked.cli import main
from unmasked.errors import UserError
from unmasked.run_folder import LoadedEncoder
from unmasked.runs import load_encoder

from .tiny_run import tiny_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("export"))[0]


def _features(model, size, seed=1):
    x = torch.randn(3, *size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.eval().forward_features(x)


def test_timm_loads_the_export_unchanged_with_equal_features(run, tmp_path, capsys):
    out = tmp_path / "exp"
    assert main(["export", str(run), "--format", "timm", str(out)]) == 0
    assert "local-dir:" in capsys.readouterr().out
    cfg = json.loads((out / "config.json").read_text())
    assert timm.is_model(cfg["architecture"]) and cfg["num_classes"] == 0
    run_cfg = json.loads((run / "config.json").read_text())
    pc = cfg["pretrained_cfg"]
    assert pc["mean"] == pytest.approx(run_cfg["mean"]) and pc["std"] == pytest.approx(run_cfg["std"])
    assert pc["input_size"] == [3, 16, 16] and cfg["model_args"]["patch_size"] == 4
    assert (out / "README.md").read_text().startswith("---\ntags:")  # a Hub model card

    model = timm.create_model(f"local-dir:{out}", pretrained=True)
    loaded = load_encoder(run)
    assert set(load_file(out / "model.safetensors")) == set(model.state_dict())
    torch.testing.assert_close(_features(model, (3, 16, 16)), _features(loaded.encoder, (3, 16, 16)),
                               atol=1e-5, rtol=0)
    data_cfg = timm.data.resolve_data_config({}, model=model)
    assert data_cfg["input_size"] == (3, 16, 16) and list(data_cfg["mean"]) == pytest.approx(run_cfg["mean"])
    # a classifier head on top, as a fine-tuning script would ask for
    assert timm.create_model(f"local-dir:{out}", pretrained=True, num_classes=5).head.out_features == 5


def test_a_dinov2_run_with_layerscale_and_learned_positions_exports_strictly(tmp_path):
    """DINOv2's LayerScale 1e-5 and learned positions (options): timm rebuilds the same encoder."""
    from timm.layers import LayerScale

    from tests.helpers import SMALL_HEADS

    run = tiny_run(tmp_path, objective="dinov2", layer_scale=1e-5, pos_embed="learned", **SMALL_HEADS)[0]
    loaded = load_encoder(run)
    assert isinstance(loaded.encoder.blocks[0].ls1, LayerScale) and loaded.spec.pos_embed == "learned"
    out = tmp_path / "exp"
    assert main(["export", str(run), "--format", "timm", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["model_args"]["init_values"] is not None
    model = timm.create_model(f"local-dir:{out}", pretrained=True)
    assert isinstance(model.blocks[0].ls1, LayerScale)
    model.load_state_dict(loaded.encoder.state_dict(), strict=True)
    torch.testing.assert_close(_features(model, (3, 16, 16)), _features(loaded.encoder, (3, 16, 16)),
                               atol=1e-5, rtol=0)


def test_existing_export_file_or_folder_refused_in_one_line(run, tmp_path, capsys):
    out = tmp_path / "exp"
    assert main(["export", str(run), str(out)]) == 0
    assert main(["export", str(run), str(out)]) == 2
    assert "already holds config.json and model.safetensors; pass --force" in capsys.readouterr().err
    assert main(["export", str(run), str(out), "--force"]) == 0
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["export", str(run), str(f)]) == 2
    assert "a file; export writes a folder" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing"), str(tmp_path / "e2")]) == 2
    assert "no such run folder or file" in capsys.readouterr().err


def _loaded(encoder, size):
    return LoadedEncoder(encoder=encoder, spec=None, mean=[0.5, 0.4, 0.3], std=[0.2, 0.2, 0.2], crop_pct=1.0,
                         data="fashion-mnist", objective="test", run_dir=None, config=None, source="test")


def test_registers_layerscale_patch14_and_no_embed_class_round_trip(tmp_path, monkeypatch):
    """A DINOv2-like timm encoder (4 registers, LayerScale, patch 14, positions without the prefix)."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    enc = VisionTransformer(img_size=28, patch_size=14, embed_dim=24, depth=2, num_heads=2, num_classes=0,
                            reg_tokens=4, init_values=1e-5, no_embed_class=True)
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # LayerScale and tokens away from their init
    monkeypatch.setattr("unmasked.export.load_encoder", lambda source: _loaded(enc, 28))
    r = export.export_timm("dinov2-like", tmp_path / "exp")
    assert r["model_args"]["reg_tokens"] == 4 and r["model_args"]["init_values"] is not None
    model = timm.create_model(f"local-dir:{tmp_path / 'exp'}", pretrained=True)
    assert model.num_prefix_tokens == 5
    torch.testing.assert_close(_features(model, (3, 28, 28)), _features(enc, (3, 28, 28)), atol=1e-5, rtol=0)


def test_an_architecture_timm_cannot_rebuild_is_refused_and_leaves_nothing(run, tmp_path, monkeypatch):
    loaded = load_encoder(run)
    for blk in loaded.encoder.blocks:
        blk.mlp.act = torch.nn.ReLU()  # not a VisionTransformer argument: timm would build GELU
    monkeypatch.setattr("unmasked.export.load_encoder", lambda source: loaded)
    with pytest.raises(UserError, match="features differ"):
        export.export_timm(str(run), tmp_path / "exp")
    assert not any((tmp_path / "exp").iterdir())
