"""Objectives are plug-ins: the registry drives the CLI, and a new objective trains without loop changes."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
import torch.nn as nn

from unmasked.cli import build_parser, main
from unmasked.config import PretrainConfig, opt
from unmasked.data.augment import AugmentSpec
from unmasked.errors import UserError
from unmasked.objectives import registry
from unmasked.objectives.base import Objective
from unmasked.objectives.registry import ObjectiveEntry
from unmasked.train.loop import pretrain
from unmasked.train.metrics import read_jsonl
from unmasked.train.schedules import cosine

from ..conftest import tiny_config


# -- a fourth objective, as a user would write it in its own module ---------------------------------
@dataclass
class DummyOptions:
    dummy_scale: float = opt(1.0, "weight of the dummy loss", "dummy")


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
        from unmasked.models.patches import patchify

        (x,) = views
        pred = self.student_call(patchify(x, self.encoder.spec.patch_size))[:, 0]
        loss = self.scale * self.step_values["dummy_temp"] * (pred - x.mean(dim=(1, 2, 3))).pow(2).mean()
        return loss, {"loss_dummy": loss.detach()}


def build_dummy(cfg) -> Dummy:
    from unmasked.build import spec_from_config
    from unmasked.models import build_encoder

    return Dummy(build_encoder(spec_from_config(cfg)), cfg.dummy_scale)


DUMMY = ObjectiveEntry(name="dummy", build=build_dummy, options=DummyOptions, views=1, teacher=False,
                       reconstructs=False, description="test objective")


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
    assert {"mae", "lut"} <= set(registry.names())
    assert registry.get("lut").teacher and registry.get("lut").views == 2
    assert not registry.get("mae").teacher and registry.get("mae").reconstructs


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


def test_unknown_objective_and_clashing_options_are_refused():
    with pytest.raises(UserError, match="--objective nope: unknown objective; choose one of mae, lut"):
        registry.get("nope")

    @dataclass
    class Clash:
        lut_weight: float = opt(9.0, "another objective's name", "clash")

    with pytest.raises(ValueError, match="already defined by objective 'lut'"):
        registry.register(ObjectiveEntry("clash", build_dummy, Clash, 1, False, False, "x"))
    assert "clash" not in registry.names()


def test_objective_options_are_flat_config_keys(dummy_registered):
    cfg = PretrainConfig(objective="dummy", dummy_scale=2.0)
    d = cfg.to_dict()
    assert d["dummy_scale"] == 2.0 and d["lut_weight"] == 0.25
    assert PretrainConfig.from_dict(d).dummy_scale == 2.0
    with pytest.raises(TypeError):
        PretrainConfig(not_an_option=1)


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
    """Keys written before objectives owned their options (flat, every objective's) keep their values."""
    old = {"objective": "lut", "data": "fashion-mnist", "mask_ratio": 0.6, "norm_pix_loss": False,
           "lut_weight": 0.5, "ema_momentum": 0.99, "proj_hidden": 128, "fuse_views": False, "decoder_width": 64,
           "decoder_depth": 2, "decoder_heads": 2, "crop": "pad", "removed_long_ago": 1}
    cfg = PretrainConfig.from_dict(old)
    assert {k: getattr(cfg, k) for k in old if k != "removed_long_ago"} == {
        k: v for k, v in old.items() if k != "removed_long_ago"}
    assert set(old) - {"removed_long_ago"} <= set(cfg.to_dict())


def test_objective_validation_names_the_option(tmp_path):
    from unmasked.config import resolve_defaults, validate

    cfg = resolve_defaults(tiny_config(tmp_path, objective="lut", mask_ratio=0.4), fashion=True)
    with pytest.raises(UserError, match="--mask-ratio 0.4: LUT needs a mask ratio in"):
        validate(cfg)
    cfg = resolve_defaults(tiny_config(tmp_path, objective="mae", mask_ratio=0.4, decoder_heads=3),
                           fashion=True)
    with pytest.raises(UserError, match="--decoder-width 32 must be divisible by --decoder-heads 3"):
        validate(cfg)
