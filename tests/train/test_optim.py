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
