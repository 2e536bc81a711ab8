import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from unmasked.models import build_encoder, encoder_spec
from unmasked.models.patches import gather_tokens, patchify
from unmasked.models.pos_embed import sincos_2d


@pytest.mark.parametrize("img,patch,chans", [(28, 4, 1), (32, 8, 3)])
def test_encoder_loads_into_timm_strict_and_matches(img, patch, chans):
    enc = build_encoder(encoder_spec("vit_tiny", img, patch, chans, depth=2)).eval()
    ref = VisionTransformer(**enc.spec.timm_kwargs()).eval()
    ref.load_state_dict(enc.state_dict(), strict=True)
    x = torch.randn(2, chans, img, img)
    with torch.no_grad():
        assert torch.allclose(ref.forward_features(x), enc.forward_features(x), atol=1e-5)
        assert torch.allclose(enc.forward_visible(patchify(x, patch)), enc.forward_features(x), atol=1e-5)


def test_presets_have_timm_sizes():
    for name, (w, d, h) in {"vit_tiny": (192, 12, 3), "vit_small": (384, 12, 6), "vit_base": (768, 12, 12)}.items():
        s = encoder_spec(name, 224, 16, 3)
        assert (s.embed_dim, s.depth, s.num_heads) == (w, d, h)
    with pytest.raises(ValueError, match="unknown model"):
        encoder_spec("vit_huge_typo", 224, 16, 3)


def test_visible_tokens_equal_gathered_full_tokens_before_attention():
    enc = build_encoder(encoder_spec("vit_tiny", 28, 4, 1, embed_dim=32, depth=1, num_heads=2))
    x = torch.randn(2, 1, 28, 28)
    p = patchify(x, 4)
    ids = torch.tensor([[0, 5, 7], [48, 1, 2]])
    full = enc.embed_patches(p)
    assert torch.allclose(enc.embed_patches(p, ids), gather_tokens(full, ids), atol=1e-6)


def test_visible_encoder_is_permutation_equivariant():
    """Without masking the set of visible tokens, not their order, defines the output."""
    enc = build_encoder(encoder_spec("vit_tiny", 28, 4, 1, embed_dim=32, depth=2, num_heads=2)).eval()
    p = patchify(torch.randn(1, 1, 28, 28), 4)
    ids = torch.tensor([[3, 10, 20, 30]])
    out = enc.forward_visible(p, ids)
    out_rev = enc.forward_visible(p, ids.flip(1))
    assert torch.allclose(out[:, 1:], out_rev[:, 1:].flip(1), atol=1e-5)
    assert torch.allclose(out[:, 0], out_rev[:, 0], atol=1e-5)


def test_positions_fixed_sincos_and_frozen():
    enc = build_encoder(encoder_spec("vit_tiny", 28, 4, 1, embed_dim=32, depth=1, num_heads=2))
    assert not enc.pos_embed.requires_grad
    assert torch.equal(enc.pos_embed, sincos_2d(32, 7))
    assert torch.count_nonzero(enc.pos_embed[0, 0]) == 0  # CLS position is zero
    assert enc.pos_embed[0, 1:].norm(dim=-1).std() < 1e-5  # every position has the same norm
