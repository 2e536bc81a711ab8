import torch

from unmasked.analysis.attention import attention_weights, patch_attention
from unmasked.models import build_encoder, encoder_spec


def test_recomputed_attention_equals_explicit_softmax_of_the_block():
    """Hooked recomputation == the weights timm's own non-fused (explicit softmax) path produces."""
    torch.manual_seed(0)
    enc = build_encoder(encoder_spec("vit_tiny", 28, 4, 1, embed_dim=48, depth=3, num_heads=3)).eval()
    x = torch.randn(2, 1, 28, 28)
    ours = attention_weights(enc, x)
    explicit = {}
    for i, blk in enumerate(enc.blocks):
        blk.attn.fused_attn = False
        blk.attn.attn_drop.register_forward_hook(lambda m, inp, out, i=i: explicit.__setitem__(i, out.detach()))
    with torch.no_grad():
        ref_out = enc.forward_features(x)
    assert len(ours) == 3
    for i in range(3):
        assert ours[i].shape == (2, 3, 50, 50)
        assert torch.allclose(ours[i], explicit[i], atol=1e-6)
    # the hooks do not change the model's output
    for blk in enc.blocks:
        blk.attn.fused_attn = True
    with torch.no_grad():
        assert torch.allclose(enc.forward_features(x), ref_out, atol=1e-5)


def test_patch_attention_drops_cls_and_renormalises():
    a = torch.softmax(torch.randn(2, 3, 5, 5), -1)
    p = patch_attention(a)
    assert p.shape == (2, 3, 4, 4)
    assert torch.allclose(p.sum(-1), torch.ones(2, 3, 4))
