"""Objectives are plug-ins: the registry drives the CLI, and a new objective trains without loop changes."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
import torch.nn as nn

from unmasked.cli import build_parser, main
from unmasked.config import PretrainConfig
from unmasked.data.augment import AugmentSpec
from unmasked.errors import UserError
from unmasked.models import build_encoder
from unmasked.models.patches import patchify
from unmasked.models.vit import spec_from_config
from unmasked.objectives import registry
from unmasked.objectives.base import Objective
from unmasked.objectives.registry import ObjectiveEntry, ObjectiveOptions
from unmasked.options import opt, positive
from unmasked.train.loop import pretrain
from unmasked.train.metrics import read_jsonl
from unmasked.train.schedules import cosine

from ..helpers import PretrainCalled, capture_pretrain, tiny_config


# -- a fourth objective, as a user would write it in its own module ---------------------------------
@dataclass
class DummyOptions(ObjectiveOptions):
    dummy_scale: float = opt(1.0, "weight of the dummy loss", "dummy", rule=positive())


class DummyStudent(nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.spec.embed_dim, 1)

    def forward(self, patches):
        return self.head(self.encoder.forward_visible(patches)[:, 0])


class Dummy(Objective):
    """Predicts each image's mean pixel from its CLS token; schedules a value and freezes its head."""

    name = "dummy"

    def __init__(self, encoder, scale: float):
        super().__init__()
        self.student = DummyStudent(encoder)
        self.scale = scale
        self.seen: list[dict] = []

    def view_specs(self, base: AugmentSpec) -> list[AugmentSpec]:
        return [base]

    def schedules(self, total_steps, steps_per_epoch):
        return {"dummy_temp": cosine(0.5, 1.0, total_steps)}

    def set_step_values(self, values):
        super().set_step_values(values)
        self.seen.append(dict(values))

    def last_layer_params(self):
        return list(self.student.head.parameters())

    def freeze_last_layer_steps(self, steps_per_epoch):
        return 2

    def forward(self, views, rng):
        (x,) = views
        pred = self.student_call(patchify(x, self.encoder.spec.patch_size))[:, 0]
        loss = self.scale * self.step_values["dummy_temp"] * (pred - x.mean(dim=(1, 2, 3))).pow(2).mean()
        return loss, {"loss_dummy": loss.detach()}


def build_dummy(cfg) -> Dummy:
    return Dummy(build_encoder(spec_from_config(cfg)), cfg.objective_options.dummy_scale)


DUMMY = ObjectiveEntry(name="dummy", objective=Dummy, options=DummyOptions, build=build_dummy,
                       defaults={"weight_decay": 0.0})


@pytest.fixture
def dummy_registered():
    registry.register(DUMMY)
    yield DUMMY
    registry.unregister("dummy")


def _choices(parser, *path):
    for name in path:
        parser = next(a for a in parser._actions if a.dest in ("command", "protocol")).choices[name]
    return tuple(next(a for a in parser._actions if a.dest == "objective").choices)


# -- tests ----------------------------------------------------------------------------------------
def test_builtin_objectives_are_registered():
    assert {"mae", "lut", "dinov2"} <= set(registry.names())
    lut, mae, dino = (registry.get(n).objective for n in ("lut", "mae", "dinov2"))
    assert lut.uses_teacher and lut.views == 2 and lut.reconstructs() and lut.shared_crop
    assert not mae.uses_teacher and mae.reconstructs()
    assert dino.uses_teacher and not dino.reconstructs() and not dino.shared_crop


def test_cli_lists_exactly_the_registered_objectives(dummy_registered):
    parser = build_parser()
    for command in ("pretrain", "bench", "demo"):
        assert _choices(parser, command) == registry.names(), command
    assert "dummy" in registry.names()
    registry.unregister("dummy")
    assert "dummy" not in _choices(build_parser(), "pretrain")


def test_objective_options_form_their_own_help_group(dummy_registered, capsys):
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    out = capsys.readouterr().out
    group = out[out.index("options of dummy:"):]
    assert "--dummy-scale" in group.split("\n\n")[0]
    assert "options of lut:" in out and "options of mae and lut:" in out


def test_unknown_objective_is_refused():
    with pytest.raises(UserError, match="--objective nope: unknown objective; choose one of mae, lut"):
        registry.get("nope")


def test_objective_options_are_held_as_a_dataclass_and_saved_flat(dummy_registered):
    cfg = PretrainConfig.flat(objective="dummy", dummy_scale=2.0)
    assert cfg.objective_options == DummyOptions(dummy_scale=2.0)
    assert not hasattr(cfg, "dummy_scale") and not hasattr(cfg, "lut_weight")  # no flat namespace
    d = cfg.to_dict()
    assert d["dummy_scale"] == 2.0 and "lut_weight" not in d  # only this objective's options
    assert PretrainConfig.from_dict(d).objective_options.dummy_scale == 2.0
    with pytest.raises(TypeError, match="not_an_option"):
        PretrainConfig.flat(not_an_option=1)


def test_an_objective_changes_shared_defaults_only_where_none_was_given(dummy_registered):
    assert PretrainConfig.flat(objective="dummy").weight_decay == 0.0
    assert PretrainConfig.flat(objective="dummy", weight_decay=0.05).weight_decay == 0.05  # = MAE's, typed
    assert PretrainConfig.flat(objective="mae").weight_decay == 0.05
    saved = PretrainConfig.flat(objective="dummy", weight_decay=0.05).to_dict()
    assert PretrainConfig.from_dict(saved).weight_decay == 0.05  # a saved run keeps its values


def test_the_cli_gives_the_objective_only_the_options_typed(dummy_registered, monkeypatch):
    seen = capture_pretrain(monkeypatch)
    with pytest.raises(PretrainCalled):
        main(["pretrain", "--objective", "dummy", "--dummy-scale", "4", "--weight-decay", "0.05", "--no-progress"])
    assert seen["cfg"].objective_options.dummy_scale == 4.0 and seen["cfg"].weight_decay == 0.05
    assert seen["explicit"] == {"objective", "dummy_scale", "weight_decay"}


def test_a_fourth_objective_trains_two_steps_without_touching_the_loop(fm_root, tmp_path, dummy_registered):
    cfg = tiny_config(tmp_path, objective="dummy", dummy_scale=3.0, steps=2, log_every=1)
    summary = pretrain(cfg, progress=False)
    assert summary["steps"] == 2 and summary["objective"] == "dummy"
    run = tmp_path / "run"
    assert json.loads((run / "config.json").read_text())["dummy_scale"] == 3.0
    rec = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in rec] == [1, 2]
    assert "loss_dummy" in rec[0] and "ema_momentum" not in rec[0]  # no teacher, no momentum logged
    assert rec[0]["dummy_temp"] == 0.5 and rec[1]["dummy_temp"] > 0.5  # the scheduled value, per step

    from unmasked.train.checkpoint import load_checkpoint

    state = load_checkpoint(run / "checkpoint.pt")["objective"]
    torch.manual_seed(cfg.seed)
    fresh = build_dummy(PretrainConfig.from_dict(json.loads((run / "config.json").read_text()))).state_dict()
    # the head (last layer) was frozen for both steps; the encoder trained
    assert torch.equal(state["student.head.weight"], fresh["student.head.weight"])
    assert not torch.equal(state["student.encoder.blocks.0.attn.qkv.weight"],
                           fresh["student.encoder.blocks.0.attn.qkv.weight"])
    assert (run / "encoder.safetensors").is_file()
    assert json.loads((run / "encoder.json").read_text())["network"] == "student"


def test_config_json_of_earlier_runs_still_loads():
    """Keys written before objectives owned their options (flat, every objective's) keep their values;
    options that did not exist yet get the behaviour the run was trained with."""
    old = {"objective": "lut", "data": "fashion-mnist", "mask_ratio": 0.6, "norm_pix_loss": False,
           "lut_weight": 0.5, "ema_momentum": 0.99, "proj_hidden": 128, "fuse_views": False, "decoder_width": 64,
           "decoder_depth": 2, "decoder_heads": 2, "crop": "pad", "dino_heads_k": 4096, "removed_long_ago": 1}
    cfg = PretrainConfig.from_dict(old)
    kept = {k: v for k, v in old.items() if k not in ("removed_long_ago", "dino_heads_k")}
    assert {k: cfg.option(k) for k in kept} == kept
    assert set(kept) <= set(cfg.to_dict()) and "dino_heads_k" not in cfg.to_dict()
    assert (cfg.decay_tokens, cfg.objective_options.teacher_mode, cfg.adam_beta2) == (False, "train", 0.95)
    dino = PretrainConfig.from_dict({"objective": "dinov2", "base_lr": 5e-4, "weight_decay": 0.04,
                                     "decoder_width": 128, "lut_weight": 0.25})
    # what DINOv2 runs did before its own optimiser recipe: MAE's betas, no layer decay, joint clipping
    assert (dino.adam_beta2, dino.layer_decay, dino.patch_embed_lr_mult, dino.min_lr, dino.drop_path) == \
        (0.95, None, 1.0, 0.0, 0.0)
    assert not dino.objective_options.dino_clip_per_module and dino.ema_momentum == 0.996
    assert (dino.layer_scale, dino.pos_embed) == (0.0, "sincos")  # not DINOv2's LayerScale and learned positions


def test_objective_validation_names_the_option(tmp_path):
    from unmasked.config import resolve_defaults, validate

    cfg = resolve_defaults(tiny_config(tmp_path, objective="lut", mask_ratio=0.4), fashion=True)
    with pytest.raises(UserError, match="--mask-ratio 0.4: LUT needs a mask ratio in"):
        validate(cfg)
    cfg = resolve_defaults(tiny_config(tmp_path, objective="mae", mask_ratio=0.4, decoder_heads=3),
                           fashion=True)
    with pytest.raises(UserError, match="--decoder-width 32 must be divisible by --decoder-heads 3"):
        validate(cfg)
