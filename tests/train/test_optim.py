import torch

from unmasked.models import MAEDecoder, build_encoder, encoder_spec
from unmasked.objectives import LUT
from unmasked.train.optim import param_groups


def _lut():
    enc = build_encoder(encoder_spec("vit_tiny", 28, 4, 1, embed_dim=32, depth=1, num_heads=2))
    dec = MAEDecoder(7, 32, 32, 1, 2, 16)
    return LUT(enc, dec, hidden_dim=64)


def test_tokens_decayed_by_default_as_the_published_code():
    """timm's add_weight_decay (used by MAE and LUT) exempts only 1-D tensors: the tokens are decayed."""
    lut = _lut()
    decay, no_decay = param_groups(lut.student, 0.05)
    names = {id(p): n for n, p in lut.student.named_parameters()}
    d = {names[id(p)] for p in decay["params"]}
    nd = {names[id(p)] for p in no_decay["params"]}
    assert "encoder.cls_token" in d and "decoder.mask_token" in d
    assert all(lut.student.get_parameter(n).ndim <= 1 for n in nd)
    assert "encoder.pos_embed" not in nd | d


def test_no_weight_decay_on_biases_norms_tokens_positions():
    lut = _lut()
    decay, no_decay = param_groups(lut.student, 0.05, decay_tokens=False)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in lut.student.named_parameters()}
    nd = {names[id(p)] for p in no_decay["params"]}
    d = {names[id(p)] for p in decay["params"]}
    assert "encoder.cls_token" in nd and "decoder.mask_token" in nd
    assert "encoder.pos_embed" not in nd | d  # frozen: not optimised at all
    assert all(n.endswith(".bias") or "norm" in n or "token" in n or ".1." in n for n in nd)
    assert "encoder.blocks.0.attn.qkv.weight" in d and "encoder.patch_embed.proj.weight" in d


def test_resumed_optimizer_uses_the_implementation_of_the_current_device():
    from unmasked.train.optim import build_optimizer, match_device

    model = torch.nn.Linear(4, 2)
    opt = build_optimizer(model, 1e-3, 0.05, torch.device("cpu"))
    state = opt.state_dict()
    for g in state["param_groups"]:  # as saved by a CUDA run
        g.update(fused=True, foreach=None)
    opt.load_state_dict(state)
    assert opt.param_groups[0]["fused"] is True  # what load_state_dict alone restores
    match_device(opt, torch.device("cpu"))
    assert all(g["fused"] is None and g["foreach"] is True for g in opt.param_groups)
    model(torch.randn(3, 4)).sum().backward()
    opt.step()


def _lut():
    enc = build_encoder(encoder_spec("vit_tiny", 28, 4, 1, embed_dim=32, depth=2, num_heads=2))
    return LUT(enc, MAEDecoder(7, 32, 32, 1, 2, 16), hidden_dim=64)


def _scale_of(groups, model, name):
    p = dict(model.named_parameters())[name]
    return next(g["lr_scale"] for g in groups if any(q is p for q in g["params"]))


def test_default_groups_are_the_two_of_earlier_runs():
    groups = param_groups(_lut().student, 0.05)
    assert [(g["weight_decay"], g["lr_scale"], g["wd_scale"], g["last_layer"]) for g in groups] == [
        (0.05, 1.0, 1.0, False), (0.0, 1.0, 0.0, False)]


def test_layer_decay_and_patch_embed_multiplier():
    lut = _lut()
    groups = param_groups(lut.student, 0.05, layer_decay=0.5, patch_embed_lr_mult=0.2, num_blocks=2)
    s = lut.student
    assert _scale_of(groups, s, "encoder.patch_embed.proj.weight") == 0.5 ** 3 * 0.2
    assert _scale_of(groups, s, "encoder.cls_token") == 0.5 ** 3
    assert _scale_of(groups, s, "encoder.blocks.0.attn.qkv.weight") == 0.5 ** 2
    assert _scale_of(groups, s, "encoder.blocks.1.mlp.fc1.weight") == 0.5
    assert _scale_of(groups, s, "encoder.norm.weight") == 1.0
    assert _scale_of(groups, s, "decoder.embed.weight") == _scale_of(groups, s, "decoder.mask_token") == 1.0
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in s.parameters() if p.requires_grad)


def test_step_hyperparameters_scale_per_group_and_freeze_the_last_layer():
    from unmasked.train.optim import set_step_hyperparameters

    lut = _lut()
    last = list(lut.student.predictor.parameters())
    opt = build_optimizer_for(lut, last)
    set_step_hyperparameters(opt, lr=1.0, weight_decay=0.3, freeze_last_layer=True)
    for g in opt.param_groups:
        assert g["lr"] == (0.0 if g["last_layer"] else g["lr_scale"])
        assert g["weight_decay"] == 0.3 * g["wd_scale"]
    set_step_hyperparameters(opt, lr=1.0, weight_decay=0.3, freeze_last_layer=False)
    assert all(g["lr"] == g["lr_scale"] for g in opt.param_groups)


def build_optimizer_for(lut, last):
    from unmasked.train.optim import build_optimizer

    return build_optimizer(lut.student, 1e-3, 0.05, torch.device("cpu"), layer_decay=0.7, num_blocks=2,
                           last_layer=last)


def test_loading_an_older_optimizer_state_keeps_this_runs_scales():
    from unmasked.train.optim import load_optimizer_state

    lut = _lut()
    opt = build_optimizer_for(lut, [])
    old = opt.state_dict()
    for g in old["param_groups"]:  # a checkpoint written before groups carried scales
        for k in ("lr_scale", "wd_scale", "last_layer"):
            g.pop(k)
    scales = [g["lr_scale"] for g in opt.param_groups]
    load_optimizer_state(opt, old, torch.device("cpu"))
    assert [g["lr_scale"] for g in opt.param_groups] == scales
    assert all("wd_scale" in g for g in opt.param_groups)
