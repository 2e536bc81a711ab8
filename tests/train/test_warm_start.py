"""`pretrain --init-from SOURCE [--weights FILE]`: the encoder of a run, of a timm export
(local-dir:) or of a timm:NAME weights file, loaded before step 0; shape from the source; refusals in
one line; a resumed run never reloads the source."""

from __future__ import annotations

import json
import shutil

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer

from tests.data.helpers import class_folder
from tests.helpers import SMALL_HEADS, tiny_config
from tests.sources.helpers import randomise_, save_local_dir
from tests.tiny_run import tiny_run
from unmasked.cli import main
from unmasked.errors import UserError
from unmasked.runs import load_encoder
from unmasked.train import checkpoint as ckpt
from unmasked.train.loop import Pretrainer

SMALL = ["--decoder-width", "32", "--decoder-depth", "1", "--decoder-heads", "2", "--proj-hidden", "64",
         "--batch-size", "8", "--epochs", "2", "--num-workers", "0", "--device", "cpu", "--no-progress",
         "--no-memory-check"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(a tiny MAE run, its image folder, its timm export)."""
    root = tmp_path_factory.mktemp("warm")
    run, data = tiny_run(root)
    assert main(["export", str(run), "--format", "timm", str(root / "exp")]) == 0
    return run, data, root / "exp"


def _student_and_teacher_equal(objective, expected: dict, skip=("pos_embed",)):
    for enc in [objective.encoder] + ([objective.teacher.encoder] if objective.teacher is not None else []):
        sd = enc.state_dict()
        assert set(sd) == set(expected)
        for k, v in expected.items():
            if k not in skip:
                assert torch.equal(sd[k], v), k


@pytest.mark.parametrize("objective", ["lut", "dinov2"])
def test_local_dir_export_warm_starts_the_student_at_step_0_with_its_shape(exported, tmp_path, objective):
    run, data, exp = exported
    out = tmp_path / "warm"
    # no --model / --width / --depth / --heads / --patch-size: all from the export (32 wide, 2 deep, patch 4),
    # at another input size (24 px: a 6 x 6 grid instead of 4 x 4)
    cfg = tiny_config(tmp_path, objective=objective, data=str(data), out=str(out), model=None, width=None,
                      depth=None, heads=None, img_size=24, subset=None, batch_size=8, steps=1,
                      init_from=f"local-dir:{exp}", pos_embed="sincos", **SMALL_HEADS)  # DINOv2: learned
    t = Pretrainer(cfg, progress=False)
    spec = t.objective.encoder.spec
    assert (spec.embed_dim, spec.depth, spec.num_heads, spec.patch_size, spec.grid) == (32, 2, 2, 4, 6)
    source = load_encoder(run).encoder.state_dict()
    _student_and_teacher_equal(t.objective, source)
    # fixed sin-cos positions: this run's own table for its 6 x 6 grid, not a resampling of the 4 x 4 one
    fresh = timm.layers.resample_abs_pos_embed(source["pos_embed"], [6, 6], num_prefix_tokens=1)
    assert not torch.allclose(t.objective.encoder.pos_embed, fresh)
    from unmasked.models.pos_embed import sincos_2d

    torch.testing.assert_close(t.objective.encoder.pos_embed.detach(), sincos_2d(32, 6))
    assert t.cfg.init_record["source"] == f"local-dir:{exp}" and "sin-cos" in t.cfg.init_record["positions"]
    assert t.cfg.init_record["kind"] == "public"


def test_cli_warm_start_is_recorded_resumes_without_the_source_and_show_says_so(exported, tmp_path, capsys):
    run, data, exp = exported
    src = tmp_path / "exp-copy"
    shutil.copytree(exp, src)
    out = tmp_path / "warm"
    args = ["pretrain", "--objective", "mae", "--data", str(data), "--out", str(out), "--img-size", "16",
            "--init-from", f"local-dir:{src}", "--steps", "1", *SMALL]
    assert main(args) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["width"], cfg["depth"], cfg["heads"], cfg["patch_size"]) == (32, 2, 2, 4)
    assert cfg["init_from"] == f"local-dir:{src}" and cfg["init_record"]["source"] == f"local-dir:{src}"
    after_one = ckpt.load_checkpoint(out / "checkpoint.pt")["objective"]
    # resume with the same command line, the source gone: nothing is reloaded, the run goes on from its step
    shutil.rmtree(src)
    assert main([*args[:-len(SMALL) - 2], "--steps", "2", *SMALL, "--resume"]) == 0
    state = ckpt.load_checkpoint(out / "checkpoint.pt")
    assert state["state"]["step"] == 2 and state["config"]["init_record"] == cfg["init_record"]
    assert any(not torch.equal(after_one[k], v) for k, v in state["objective"].items() if "encoder" in k)
    capsys.readouterr()
    pytest.importorskip("matplotlib")
    img = data / "cat" / "0.png"
    assert main(["show", str(out), str(img), "--out", str(tmp_path / "fig"), "--device", "cpu"]) == 0
    shown = json.loads((tmp_path / "fig" / "show.json").read_text())
    assert shown["started_from"] == f"local-dir:{src}"


def test_resume_loads_the_checkpoint_not_the_source(exported, tmp_path):
    run, data, exp = exported
    cfg = dict(objective="lut", data=str(data), subset=None, batch_size=8, img_size=16, patch_size=4,
               init_from=str(run))
    from unmasked.train.loop import pretrain

    pretrain(tiny_config(tmp_path, steps=2, **cfg), progress=False)
    saved = ckpt.load_checkpoint(tmp_path / "run" / "checkpoint.pt")["objective"]
    t = Pretrainer(tiny_config(tmp_path, steps=3, **cfg), resume=True, explicit={"out", "steps", "init_from"},
                   progress=False)
    for k, v in t.objective.state_dict().items():
        assert torch.equal(v, saved[k]), k


def test_timm_weights_resampled_and_channel_adapted_as_timm_loads_them(tmp_path):
    """A 3-channel, 14 x 14-grid timm file warm-starts a greyscale 32 px run: the student equals what
    timm.create_model itself builds from that file at 32 px with 1 input channel."""
    model = randomise_(timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, depth=2))
    w = tmp_path / "tiny.safetensors"
    save_file(model.state_dict(), str(w))
    data = class_folder(tmp_path / "imgs", per_class=6, size=(32, 32), mode="L")
    cfg = tiny_config(tmp_path, objective="mae", data=str(data), model=None, width=None, depth=None, heads=None,
                      img_size=32, subset=None, batch_size=4, init_from="timm:vit_tiny_patch16_224",
                      weights=str(w))
    t = Pretrainer(cfg, progress=False)
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=True, num_classes=0, depth=2, img_size=32,
                            in_chans=1, pretrained_cfg_overlay=dict(file=str(w)))
    _student_and_teacher_equal(t.objective, ref.state_dict(), skip=())
    rec = t.cfg.init_record
    assert rec["weights"] == str(w.resolve()) and len(rec["weights_sha256"]) == 64
    assert "14x14 -> 2x2" in rec["positions"] and "3 -> 1 input channels" in rec["channels"]
    assert t.cfg.model == "vit_tiny" and t.cfg.depth == 2 and t.cfg.patch_size == 16
    t.fit()  # and it trains


def test_refusals_in_one_line(exported, tmp_path, capsys):
    run, data, exp = exported
    with pytest.raises(UserError, match=r"--init-from .*its encoder \(width 32, depth 2, 2 heads, patch 4, MLP "
                                        r"ratio 4\) does not fit this run's \(width 48, depth 2, 2 heads, patch 4"):
        Pretrainer(tiny_config(tmp_path, width=48, data=str(data), img_size=16, patch_size=4, subset=None,
                               init_from=str(run)), progress=False)
    reg = randomise_(timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, num_classes=0, depth=1))
    w = tmp_path / "reg.safetensors"
    save_file(reg.state_dict(), str(w))
    # registers and LayerScale train (test_warm_start_structure.py); qk-norm this encoder cannot hold
    qk = save_local_dir(VisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2,
                                          qk_norm=True, num_classes=0), tmp_path / "qk")
    base = ["pretrain", "--data", str(data), "--img-size", "28", *SMALL]
    cases = [
        (["--out", str(tmp_path / "a"), "--init-from", f"local-dir:{qk}"], "has qk-norm, which"),
        (["--out", str(tmp_path / "b"), "--weights", str(w)], "give the encoder with --init-from timm:NAME"),
        (["--out", str(tmp_path / "c"), "--init-from", str(tmp_path / "nothing")], "no such run folder or file"),
        (["--out", str(tmp_path / "d"), "--init-from", str(run), "--weights", str(w)],
         "only with --init-from timm:NAME"),
    ]
    for extra, expected in cases:
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1, err
        assert not (tmp_path / extra[1] / "checkpoint.pt").exists()


@pytest.mark.parametrize("objective", ["lut", "dinov2"])
def test_a_warm_started_run_resumes_exactly(exported, tmp_path, objective):
    """Two steps in one go equal one step, a stop, and a resumed second step (the source not reloaded)."""
    from unmasked.train.loop import pretrain

    run, data, exp = exported
    opts = dict(objective=objective, data=str(data), subset=None, batch_size=4, img_size=16, patch_size=4,
                init_from=f"local-dir:{exp}", epochs=1, warmup_epochs=0.5, **SMALL_HEADS)
    pretrain(tiny_config(tmp_path / "a", steps=2, **opts), progress=False)
    pretrain(tiny_config(tmp_path / "b", steps=1, **opts), progress=False)
    pretrain(tiny_config(tmp_path / "b", steps=2, **opts), resume=True, explicit={"out", "steps", "init_from"},
             progress=False)
    a, b = (ckpt.load_checkpoint(tmp_path / x / "run" / "checkpoint.pt")["objective"] for x in "ab")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=0, msg=k)
