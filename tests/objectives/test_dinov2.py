"""The DINOv2 objective: forward contract, teacher, schedules, export, options, exact resume."""

from dataclasses import fields

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from tests.data.helpers import class_folder
from tests.helpers import PretrainCalled, capture_pretrain, tiny_config
from tests.objectives.dinov2_loop import HandLoop, one_thread, tiny_dinov2  # noqa: F401 (fixture)
from unmasked.config import resolve_defaults, validate
from unmasked.data.augment import AugmentSpec, BatchAugment
from unmasked.errors import UserError
from unmasked.models.pos_embed import sincos_2d
from unmasked.objectives import dinov2 as dinov2_module
from unmasked.objectives.dino.options import DINOv2Options
from unmasked.rng import BatchRandom

BASE = AugmentSpec(img_size=28, mean=(0.5,), std=(0.25,))


def _views(obj, b=6, step=0):
    g = torch.Generator().manual_seed(step)
    images = torch.randint(0, 256, (b, 1, 28, 28), dtype=torch.uint8, generator=g)
    rng = BatchRandom(0, step, 0, b)
    return [BatchAugment(s)(images, rng) for s in obj.view_specs(BASE)], rng


def test_views_are_two_global_and_n_local_crops_with_dino_v1_blur():
    obj = tiny_dinov2(local_crops=3, dino_blur=True)
    specs = obj.view_specs(BASE)
    assert [s.img_size for s in specs] == [28, 28, 12, 12, 12]
    assert [s.blur_p for s in specs] == [1.0, 0.1, 0.5, 0.5, 0.5]  # v1, not DINOv2's inverted ones
    assert [s.solarize_p for s in specs] == [0.0, 0.2, 0.0, 0.0, 0.0]
    assert all(s.color_dino and not s.color and s.crop == "rrc" and s.grayscale_p == 0.2 for s in specs)
    assert specs[0].rrc_scale == (0.4, 1.0) and specs[2].rrc_scale == (0.1, 0.4)  # small-image recipe
    assert [s.blur_p for s in tiny_dinov2().view_specs(BASE)] == [0.0, 0.0, 0.0, 0.0]  # small: blur off


def test_forward_sums_weighted_losses_and_only_the_student_learns():
    obj = tiny_dinov2(koleo_weight=0.3, ibot_weight=0.5).train()
    views, rng = _views(obj)
    loss, m = obj(views, rng)
    assert torch.allclose(loss, m["loss_dino"] + 0.5 * m["loss_ibot"] + 0.3 * m["loss_koleo"], atol=1e-5)
    assert 0 < m["masked_share"] < 0.5
    loss.backward()
    assert all(p.grad is not None for n, p in obj.student.named_parameters() if p.requires_grad)
    assert all(p.grad is None for p in obj.teacher.parameters())
    assert obj.student.encoder.pos_embed.grad is None  # fixed sin-cos positions stay fixed


def test_teacher_stays_in_eval_mode_and_ema_covers_backbone_and_heads():
    obj = tiny_dinov2(ibot_separate_head=True)
    obj.train()
    assert obj.student.training and not obj.teacher.training
    assert not any(m.training for m in obj.teacher.modules())
    names = {n.split(".")[0] for n, _ in obj.teacher.named_parameters()}
    assert names == {"encoder", "dino_head", "ibot_head"}
    with torch.no_grad():
        for p in obj.student.parameters():
            p.fill_(1.0)
        for p in obj.teacher.parameters():
            p.fill_(3.0)
    obj.update_teacher(0.9)
    assert all(torch.allclose(p, torch.full_like(p, 2.8)) for p in obj.teacher.parameters())


def test_centre_moves_once_per_optimiser_step_not_per_micro_batch():
    """Two micro-batches then one update equal one forward of the whole batch then one update."""
    whole, micro = tiny_dinov2().train(), tiny_dinov2().train()
    views, rng = _views(whole, b=8)
    whole(views, rng)
    for half in (slice(0, 4), slice(4, 8)):
        micro([v[half] for v in views], BatchRandom(0, 0, half.start // 4, 4))
    assert torch.count_nonzero(micro.dino_center.center) == 0  # not before the optimiser step
    whole.update_teacher(0.99)
    micro.update_teacher(0.99)
    assert torch.count_nonzero(whole.dino_center.center) > 0
    assert torch.allclose(whole.dino_center.center, micro.dino_center.center, atol=1e-6)


def test_teacher_temperature_schedule_is_lazy_and_reaches_the_step():
    obj = tiny_dinov2(dino_teacher_temp_warmup_epochs=2.0)
    sched = obj.schedules(total_steps=10**12, steps_per_epoch=10)["teacher_temp"]
    assert sched[0] == pytest.approx(0.04) and sched(10) == pytest.approx(0.055) and sched[10**11] == 0.07
    views, rng = _views(obj)
    obj.set_step_values({"teacher_temp": sched[10]})
    assert obj(views, rng)[1]["teacher_temp"].item() == pytest.approx(0.055)


def test_last_layer_is_the_prototype_layer_frozen_for_an_epoch():
    obj = tiny_dinov2(ibot_separate_head=True)
    ids = {id(p) for p in obj.last_layer_params()}
    want = {id(p) for h in (obj.student.dino_head, obj.student.ibot_head) for p in h.last_layer.parameters()}
    assert ids == want and len(ids) == 4
    assert obj.freeze_last_layer_steps(37) == 37


def test_export_is_the_teacher_backbone_and_loads_into_timm_strictly():
    obj = tiny_dinov2()
    enc = obj.export_encoder()
    assert enc is obj.teacher.encoder and obj.export_network == "teacher"
    ref = VisionTransformer(**enc.spec.timm_kwargs())
    ref.load_state_dict(enc.state_dict(), strict=True)  # no mask token in the export
    assert "mask_token" in dict(obj.student.named_parameters())


def test_sinkhorn_option_runs_without_torch_distributed_and_has_no_centre_update():
    obj = tiny_dinov2(dino_centering="sinkhorn").train()
    views, rng = _views(obj)
    loss, _ = obj(views, rng)
    loss.backward()
    obj.update_teacher(0.99)
    assert torch.isfinite(loss) and torch.count_nonzero(obj.dino_center.center) == 0


def test_options_are_prefixed_documented_and_grouped():
    for f in fields(DINOv2Options):
        assert f.name.split("_")[0] in ("dino", "ibot", "koleo"), f.name
        assert f.metadata["help"].startswith("DINOv2: ") and f.metadata["group"] == "dinov2"


def _cfg(tmp_path, **given):
    """A DINOv2 config as `unmasked pretrain` builds it from these options (before resolution)."""
    cfg = tiny_config(tmp_path, **{"objective": "dinov2", "img_size": 28, "patch_size": 4, **given})
    cfg.in_chans = 1
    return cfg


def _resolved(tmp_path, small=True, **given):
    return resolve_defaults(_cfg(tmp_path, **given), small)


def test_resolve_fills_small_and_folder_defaults(tmp_path):
    small = _resolved(tmp_path)
    o = small.objective_options
    assert (o.dino_heads_k, o.dino_local_size, o.dino_blur) == (4096, 12, False)
    assert o.ibot_mask_min_patches == 1 and o.dino_teacher_temp_warmup_epochs == pytest.approx(0.6)
    assert (small.base_lr, small.weight_decay, small.clip_grad, small.lr_scaling) == (5e-4, 0.04, 3.0, "linear")
    big = _resolved(tmp_path, small=False, img_size=224, patch_size=16, epochs=100)
    o = big.objective_options
    assert (o.dino_heads_k, o.dino_local_size, o.dino_blur, o.dino_global_scale_min) == (65536, 96, True, 0.32)
    assert o.ibot_mask_min_patches == 4 and o.dino_teacher_temp_warmup_epochs == 30
    assert big.lr_scaling == "sqrt"
    typed = _resolved(tmp_path, dino_heads_k=1024, base_lr=1e-3)
    assert typed.objective_options.dino_heads_k == 1024 and typed.base_lr == 1e-3


def test_dinov2_recipe_is_applied_only_where_no_value_was_given(tmp_path):
    """DINOv2's optimiser (betas, layer decay, patch-embed lr, EMA, warm-up, min lr, drop path,
    weight decay) where not given; a given value is kept even when it equals MAE's default."""
    cfg = _resolved(tmp_path, small=False, model="vit_large", epochs=100, warmup_epochs=None)
    assert (cfg.adam_beta2, cfg.layer_decay, cfg.patch_embed_lr_mult, cfg.ema_momentum, cfg.min_lr) == \
        (0.999, 0.9, 0.2, 0.992, 1e-6)
    assert (cfg.warmup_epochs, cfg.drop_path, cfg.weight_decay, cfg.weight_decay_end) == (10.0, 0.3, 0.04, 0.4)
    assert cfg.objective_options.dino_clip_per_module
    mae_values = dict(base_lr=1.5e-4, weight_decay=0.05, ema_momentum=0.996, adam_beta2=0.95, drop_path=0.0,
                      lr_scaling="linear")
    typed = _resolved(tmp_path, small=False, **mae_values)
    assert {k: typed.option(k) for k in mae_values} == mae_values
    assert typed.weight_decay_end == 0.4  # an explicit --weight-decay keeps DINOv2's cosine to 0.4
    lut = tiny_config(tmp_path, objective="lut")
    assert (lut.adam_beta2, lut.layer_decay, lut.ema_momentum, lut.min_lr) == (0.95, None, 0.996, 0.0)


def test_layerscale_and_learned_positions_are_dinov2s_options_not_its_defaults(tmp_path):
    """Typed, DINOv2's build has every block's LayerScale gammas at 1e-5 and learned positions
    (trunc-normal 0.02, trained); not typed, DINOv2 keeps fixed sin-cos and no LayerScale (measured
    harmful at small scale), as MAE and LUT."""
    heads = dict(dino_heads_k=64, dino_head_hidden=32, dino_head_bottleneck=16, dino_local_crops=1)
    obj = dinov2_module.build(_resolved(tmp_path, layer_scale=1e-5, pos_embed="learned", **heads))
    enc = obj.student.encoder
    gammas = [g for blk in enc.blocks for g in (blk.ls1.gamma, blk.ls2.gamma)]
    assert len(gammas) == 2 * len(enc.blocks) and all(torch.equal(g, torch.full_like(g, 1e-5)) for g in gammas)
    assert enc.pos_embed.requires_grad and not obj.teacher.encoder.pos_embed.requires_grad
    assert 0.018 < enc.pos_embed.std() < 0.022  # trunc_normal_(std=0.02), cut at +-2 as DINOv2's
    obj(*_views(obj))[0].backward()
    assert enc.pos_embed.grad is not None and enc.pos_embed.grad.abs().sum() > 0
    assert all(g.grad is not None for g in gammas)

    sincos = dinov2_module.build(_resolved(tmp_path, **heads))
    enc = sincos.student.encoder
    assert not enc.pos_embed.requires_grad
    assert torch.equal(enc.pos_embed, sincos_2d(enc.embed_dim, enc.spec.grid))
    assert isinstance(enc.blocks[0].ls1, torch.nn.Identity)
    assert _resolved(tmp_path, layer_scale=1e-5, **heads).pos_embed == "sincos"  # only what was typed
    for other in ("lut", "mae"):  # as their authors: fixed sin-cos, no LayerScale
        cfg = tiny_config(tmp_path, objective=other)
        assert (cfg.layer_scale, cfg.pos_embed) == (0.0, "sincos")


def test_the_cli_keeps_typed_values_equal_to_maes_defaults(tmp_path, monkeypatch):
    """Typed on the command line, MAE's values stay, even where DINOv2 declares another default;
    what was not typed (weight decay's end, clipping) is still DINOv2's."""
    from unmasked.cli import main

    seen = capture_pretrain(monkeypatch)
    typed = ["--adam-beta2", "0.95", "--layer-decay", "none", "--patch-embed-lr-mult", "1", "--ema-momentum",
             "0.996", "--min-lr", "0", "--drop-path", "0", "--warmup-epochs", "5", "--weight-decay", "0.05",
             "--base-lr", "1.5e-4", "--lr-scaling", "linear", "--layer-scale", "0", "--pos-embed", "sincos"]
    with pytest.raises(PretrainCalled):
        main(["pretrain", "--objective", "dinov2", "--data", "fashion-mnist", "--out", str(tmp_path / "r"),
              "--no-progress", *typed])
    cfg = resolve_defaults(seen["cfg"], False)
    assert (cfg.adam_beta2, cfg.layer_decay, cfg.patch_embed_lr_mult, cfg.ema_momentum, cfg.min_lr) == \
        (0.95, None, 1.0, 0.996, 0.0)
    assert (cfg.drop_path, cfg.warmup_epochs, cfg.weight_decay, cfg.base_lr, cfg.lr_scaling) == \
        (0.0, 5.0, 0.05, 1.5e-4, "linear")
    assert (cfg.layer_scale, cfg.pos_embed) == (0.0, "sincos")
    assert (cfg.weight_decay_end, cfg.clip_grad) == (0.4, 3.0)  # not typed: DINOv2's
    assert seen["explicit"] >= {"adam_beta2", "layer_decay", "drop_path", "weight_decay"}


def test_pretrain_help_shows_dinov2s_defaults_beside_the_shared_ones(capsys):
    from unmasked.cli import main

    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("(default: 0.95; dinov2: 0.999)", "(default: 0.996; dinov2: 0.992)", "(default: 1.0; dinov2: 0.2)",
                  "(default: 0.0; dinov2: 1e-06)", "(default: 0.05; dinov2: 0.04)", "(dinov2: 0.9)",
                  "(default: 0.0; dinov2: from the data and model)"):
        assert shown in text, shown


def _grad_norm(params) -> float:
    return float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])))


def test_gradients_are_clipped_per_module_as_dinov2_does():
    """Backbone (with the mask token), DINO head and iBOT head each clipped to --clip-grad on
    their own: a head whose gradient is small keeps it while the backbone's is cut."""
    obj = tiny_dinov2(ibot_separate_head=True)
    s = obj.student
    modules = {"backbone": [*s.encoder.parameters(), s.mask_token], "dino": list(s.dino_head.parameters()),
               "ibot": list(s.ibot_head.parameters())}
    scale = {"backbone": 10.0, "dino": 1e-3, "ibot": 1.0}

    def fill():
        g = torch.Generator().manual_seed(0)
        for name, params in modules.items():
            for p in params:
                p.grad = torch.randn(p.shape, generator=g) * scale[name]

    fill()
    before = {k: _grad_norm(v) for k, v in modules.items()}
    dino_grads = [p.grad.clone() for p in modules["dino"]]
    total = obj.clip_gradients(3.0)
    assert float(total) == pytest.approx(sum(n ** 2 for n in before.values()) ** 0.5, rel=1e-5)  # the joint norm
    after = {k: _grad_norm(v) for k, v in modules.items()}
    assert before["backbone"] > 3.0 and before["ibot"] > 3.0 and before["dino"] < 3.0
    assert after["backbone"] == pytest.approx(3.0, rel=1e-4) and after["ibot"] == pytest.approx(3.0, rel=1e-4)
    assert all(torch.equal(p.grad, g) for p, g in zip(modules["dino"], dino_grads))  # untouched

    obj.options.dino_clip_per_module = False  # the joint norm: every module scaled by the same factor
    fill()
    obj.clip_gradients(3.0)
    joint = {k: _grad_norm(v) for k, v in modules.items()}
    assert sum(n ** 2 for n in joint.values()) ** 0.5 == pytest.approx(3.0, rel=1e-4)
    assert joint["dino"] < before["dino"] / 10


def test_ibot_heads_k_with_a_shared_head_is_one_line_error(tmp_path):
    with pytest.raises(UserError, match=r"^--ibot-heads-k 512: only a separate iBOT head") as e:
        _resolved(tmp_path, ibot_heads_k=512)
    assert "\n" not in str(e.value)
    assert _resolved(tmp_path, ibot_heads_k=512, ibot_separate_head=True).objective_options.ibot_heads_k == 512


def test_build_gives_a_working_objective(tmp_path):
    cfg = _resolved(tmp_path, dino_heads_k=64, dino_head_hidden=32, dino_head_bottleneck=16, dino_local_crops=1)
    obj = dinov2_module.build(cfg)
    assert obj.student.dino_head.last_layer.weight_v.shape == (64, 16)
    loss, _ = obj(*_views(obj))
    assert torch.isfinite(loss)


@pytest.mark.parametrize("field,value,match", [
    ("dino_local_size", 10, "multiple of --patch-size 4"),
    ("dino_local_size", 32, "at most --img-size 28"),
    ("dino_teacher_temp", 0.0, "must be a finite number above 0"),
    ("dino_center_momentum", 1.0, r"in \[0, 1\)"),
    ("ibot_mask_ratio_max", 0.05, "ibot-mask-ratio-min"),
    ("dino_heads_k", 0, "positive integer"),
    ("dino_heads_k", 1, r"needs at least 2 prototypes \(with 1 the DINO and iBOT losses are always 0\)"),
    ("koleo_weight", -1.0, "must be a finite number >= 0"),
    ("dino_local_scale_min", 0.5, "must not exceed --dino-local-scale-max"),
])
def test_validate_names_the_option_and_what_is_allowed(tmp_path, field, value, match):
    """Single values are refused by their field's rule, combinations by the options' validate."""
    cfg = _resolved(tmp_path)
    setattr(cfg.objective_options, field, value)
    with pytest.raises(UserError, match=match) as e:
        validate(cfg)
    assert f"--{field.replace('_', '-')}" in str(e.value)


def test_one_prototype_in_a_separate_ibot_head_is_refused(tmp_path):
    cfg = _resolved(tmp_path, ibot_separate_head=True, ibot_heads_k=1)
    with pytest.raises(UserError, match=r"^--ibot-heads-k 1: needs at least 2 prototypes"):
        validate(cfg)


def test_validate_refuses_koleo_on_a_micro_batch_of_one(tmp_path):
    """KoLeo's nearest neighbour needs a second image in the micro-batch: refused up front, naming
    the options that work (fewer accumulation steps, a larger batch, or KoLeo off)."""
    cfg = _resolved(tmp_path, batch_size=4, accum_steps=4)
    with pytest.raises(UserError) as e:
        cfg.objective_options.validate(cfg)
    assert str(e.value) == ("--batch-size 4 / --accum-steps 4 = 1 image per micro-batch: DINOv2's KoLeo term "
                            "(--koleo-weight 0.1, per view) needs at least 2 images per micro-batch; use "
                            "--accum-steps 2 or fewer (micro-batches of 2 or more images), or --koleo-weight 0")
    cfg = _resolved(tmp_path, batch_size=1, accum_steps=1)
    with pytest.raises(UserError, match=r"use --batch-size 2 or more .*, or --koleo-weight 0$"):
        cfg.objective_options.validate(cfg)
    for ok in (dict(batch_size=4, accum_steps=2), dict(batch_size=1, accum_steps=1, koleo_weight=0.0)):
        cfg = _resolved(tmp_path, **ok)
        cfg.objective_options.validate(cfg)


def test_under_torchrun_the_koleo_floor_counts_each_process_s_images(tmp_path, monkeypatch):
    """KoLeo looks for neighbours among its own process's images: 4 images per micro-batch over 4
    processes leave one each, refused before anything starts, naming the per-process count."""
    monkeypatch.setenv("WORLD_SIZE", "4")
    cfg = _resolved(tmp_path, batch_size=8, accum_steps=2)
    with pytest.raises(UserError) as e:
        cfg.objective_options.validate(cfg)
    assert str(e.value).startswith("--batch-size 8 / --accum-steps 2 = 4 image per micro-batch = 1 per process "
                                   "(4 processes): DINOv2's KoLeo term")
    assert "on each process; use --accum-steps 1 or fewer" in str(e.value)
    cfg = _resolved(tmp_path, batch_size=8, accum_steps=1)
    cfg.objective_options.validate(cfg)


def _images(step, b=8):
    return torch.randint(0, 256, (b, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(step))


@pytest.mark.usefixtures("one_thread")
def test_exact_resume_mid_training_includes_the_centres():
    """Steps 0-5 uninterrupted equal steps 0-2, a state-dict round trip, then steps 3-5."""
    total, spe = 6, 2  # the last layer is frozen for step 0-1 and trains after

    def fresh():
        obj = tiny_dinov2(k=32, local_crops=1)
        return obj, HandLoop(obj, total, spe, batch=8, lr=1e-3)

    obj, loop = fresh()
    for s in range(total):
        loop.step(s, _images(s))
    straight = {k: v.clone() for k, v in obj.state_dict().items()}

    obj, loop = fresh()
    for s in range(3):
        loop.step(s, _images(s))
    saved = {"objective": obj.state_dict(), "optimizer": loop.opt.state_dict()}
    assert torch.count_nonzero(saved["objective"]["dino_center.center"]) > 0
    assert torch.count_nonzero(saved["objective"]["ibot_center.center"]) > 0
    torch.manual_seed(123)  # the objective draws nothing from the global generator
    obj, loop = fresh()
    obj.load_state_dict(saved["objective"])
    loop.opt.load_state_dict(saved["optimizer"])
    for s in range(3, total):
        loop.step(s, _images(s))
    resumed = obj.state_dict()
    assert set(resumed) == set(straight)
    for k in straight:
        assert torch.equal(resumed[k], straight[k]), k

    # without the centres the run would differ: the test can fail
    obj, loop = fresh()
    saved["objective"]["dino_center.center"].zero_()
    obj.load_state_dict(saved["objective"])
    loop.opt.load_state_dict(saved["optimizer"])
    loop.step(3, _images(3))
    assert not torch.equal(obj.state_dict()["dino_center.center"], straight["dino_center.center"])


def test_a_dinov2_run_is_evaluated_on_its_teacher_backbone(fm_root, tmp_path):
    """Through the loop: the checkpoint, the export and the monitor all give the EMA teacher's backbone."""
    from safetensors.torch import load_file

    from tests.helpers import tiny_config
    from unmasked.runs import load_encoder
    from unmasked.train import checkpoint as ckpt
    from unmasked.train.loop import pretrain

    cfg = tiny_config(tmp_path, objective="dinov2", dino_heads_k=32, dino_head_hidden=32, dino_head_bottleneck=16,
                      dino_local_crops=2, steps=2, log_every=1)
    pretrain(cfg, progress=False)
    run = tmp_path / "run"
    state = ckpt.load_checkpoint(run / "checkpoint.pt")["objective"]
    teacher = {k[len("teacher.encoder."):]: v for k, v in state.items() if k.startswith("teacher.encoder.")}
    student = {k[len("student.encoder."):]: v for k, v in state.items() if k.startswith("student.encoder.")}
    assert any(not torch.equal(teacher[k], student[k]) for k in teacher)  # two different networks by now
    for source in (run / "checkpoint.pt", run / "encoder.safetensors"):
        loaded = load_encoder(source).encoder.state_dict()
        assert all(torch.equal(loaded[k], teacher[k]) for k in teacher), source
    assert set(load_file(run / "encoder.safetensors")) == set(teacher)  # no mask token in the export


def test_a_run_saved_before_layerscale_and_learned_positions_loads_resumes_and_evaluates_as_before(tmp_path):
    """config.json, the checkpoint and encoder.json without the two keys: the run is what it was
    (no LayerScale, fixed sin-cos), not DINOv2's new defaults, through load, resume and kNN."""
    import json

    from unmasked.cli import main
    from unmasked.config import PretrainConfig
    from unmasked.runs import load_encoder
    from unmasked.train import checkpoint as ckpt
    from unmasked.train.loop import pretrain

    new_keys = ("layer_scale", "pos_embed")
    data = class_folder(tmp_path / "imgs", per_class=6, size=(40, 30))
    cfg = tiny_config(tmp_path, objective="dinov2", data=str(data), img_size=16, patch_size=4, subset=None,
                      batch_size=8, dino_heads_k=32, dino_head_hidden=32, dino_head_bottleneck=16,
                      dino_local_crops=2, steps=1, log_every=1, layer_scale=0.0, pos_embed="sincos")
    pretrain(cfg, progress=False)
    run = tmp_path / "run"
    # what the older code wrote
    saved = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({k: v for k, v in saved.items() if k not in new_keys}))
    state = ckpt.load_checkpoint(run / "checkpoint.pt")
    state["config"] = {k: v for k, v in state["config"].items() if k not in new_keys}
    state["encoder_spec"] = {k: v for k, v in state["encoder_spec"].items() if k not in new_keys}
    torch.save(state, run / "checkpoint.pt")
    info = json.loads((run / "encoder.json").read_text())
    info["spec"] = {k: v for k, v in info["spec"].items() if k not in new_keys}
    del info["timm_kwargs"]["init_values"]
    (run / "encoder.json").write_text(json.dumps(info))

    old = PretrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    assert (old.layer_scale, old.pos_embed) == (0.0, "sincos")
    for source in (run, run / "checkpoint.pt", run / "encoder.safetensors"):
        enc = load_encoder(source).encoder
        assert isinstance(enc.blocks[0].ls1, torch.nn.Identity) and not enc.pos_embed.requires_grad, source
    assert main(["pretrain", "--out", str(run), "--resume", "--steps", "2", "--no-progress"]) == 0
    state = ckpt.load_checkpoint(run / "checkpoint.pt")
    assert state["state"]["step"] == 2 and not any(".ls1." in k for k in state["objective"])
    pos = state["objective"]["student.encoder.pos_embed"]
    assert torch.equal(pos, sincos_2d(pos.shape[-1], 4))  # still fixed after the resumed step
    assert (state["config"]["layer_scale"], state["config"]["pos_embed"]) == (0.0, "sincos")
    assert main(["eval", "knn", str(run), "--no-progress"]) == 0
    assert json.loads((run / "knn.json").read_text())["objective"] == "dinov2"


def test_layer_scale_and_layer_decay_can_be_turned_off_by_name():
    """'none' (as a study file writes it: TOML has no null) turns DINOv2's defaults off."""
    from unmasked.cli import build_parser

    args = build_parser().parse_args(["pretrain", "--objective", "dinov2", "--layer-scale", "none",
                                      "--layer-decay", "off", "--pos-embed", "sincos"])
    assert (args.layer_scale, args.layer_decay, args.pos_embed) == (0.0, None, "sincos")
    assert build_parser().parse_args(["pretrain", "--layer-scale", "1e-4"]).layer_scale == 1e-4
    with pytest.raises(SystemExit):
        build_parser().parse_args(["pretrain", "--pos-embed", "rope"])
