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


def test_pos_embed_interpolation_is_the_identity_at_the_native_grid():
    enc = build_encoder(encoder_spec("vit_tiny", 28, 4, 1, embed_dim=32, depth=1, num_heads=2)).eval()
    assert enc.patch_pos_embed(7, 7) is not None
    assert torch.equal(enc.patch_pos_embed(7, 7), enc.pos_embed[:, 1:])
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(enc.forward_image(x), enc.forward_visible(patchify(x, 4)))
        assert torch.allclose(enc.forward_image(x), enc.forward_features(x), atol=1e-5)


def test_pos_embed_is_resampled_bicubically_to_other_grids():
    enc = build_encoder(encoder_spec("vit_tiny", 28, 4, 1, embed_dim=32, depth=1, num_heads=2))
    grid = enc.pos_embed[:, 1:].reshape(1, 7, 7, 32).permute(0, 3, 1, 2)
    want = torch.nn.functional.interpolate(grid, size=(3, 5), mode="bicubic", align_corners=False)
    assert torch.allclose(enc.patch_pos_embed(3, 5), want.flatten(2).transpose(1, 2), atol=1e-6)


def test_a_12px_local_crop_and_a_larger_image_run_through_the_encoder():
    enc = build_encoder(encoder_spec("vit_tiny", 28, 4, 1, embed_dim=32, depth=2, num_heads=2)).eval()
    assert enc.forward_image(torch.randn(3, 1, 12, 12)).shape == (3, 1 + 9, 32)
    assert enc.forward_image(torch.randn(1, 1, 40, 40)).shape == (1, 1 + 100, 32)  # evaluation at 40 px
    with pytest.raises(ValueError, match="not divisible"):
        enc.forward_image(torch.randn(1, 1, 13, 13))


def test_mask_token_replaces_masked_embeddings_before_positions_and_stays_out_of_the_state_dict():
    enc = build_encoder(encoder_spec("vit_tiny", 28, 4, 1, embed_dim=32, depth=1, num_heads=2))
    keys = set(enc.state_dict())
    x = torch.randn(2, 1, 28, 28)
    masks = torch.zeros(2, 49, dtype=torch.bool)
    masks[0, [0, 5]] = True
    token = torch.randn(1, 1, 32)
    got = enc.embed_image(x, masks, token)
    plain = enc.embed_image(x)
    pos = enc.pos_embed[:, 1:]
    assert torch.allclose(got[0, 0], token[0, 0] + pos[0, 0], atol=1e-6)
    assert torch.allclose(got[0, 5], token[0, 0] + pos[0, 5], atol=1e-6)
    assert torch.equal(got[1], plain[1]) and torch.equal(got[0, 1:5], plain[0, 1:5])
    assert set(enc.state_dict()) == keys and not any("mask" in k for k in keys)


def test_layerscale_and_learned_positions_load_into_timm_strict_and_match():
    enc = build_encoder(encoder_spec("vit_tiny", 28, 4, 1, embed_dim=32, depth=2, num_heads=2,
                                     layer_scale=1e-5, pos_embed="learned")).eval()
    with torch.no_grad():
        for blk in enc.blocks:
            blk.ls1.gamma.fill_(0.5)  # away from 1e-5, so a missing LayerScale would change the output
    assert enc.pos_embed.requires_grad and not torch.equal(enc.pos_embed, sincos_2d(32, 7))
    ref = VisionTransformer(**enc.spec.timm_kwargs()).eval()
    ref.load_state_dict(enc.state_dict(), strict=True)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(ref.forward_features(x), enc.forward_features(x), atol=1e-5)
    with pytest.raises(ValueError, match="unknown position embedding"):
        encoder_spec("vit_tiny", 28, 4, 1, pos_embed="rope")


def test_a_spec_saved_before_layerscale_and_learned_positions_is_the_old_encoder():
    from unmasked.models import EncoderSpec

    old = dict(img_size=28, patch_size=4, in_chans=1, embed_dim=32, depth=1, num_heads=2, mlp_ratio=4.0,
               drop_path_rate=0.0)
    spec = EncoderSpec(**old)
    assert (spec.layer_scale, spec.pos_embed) == (0.0, "sincos") and spec.timm_kwargs()["init_values"] is None
    enc = build_encoder(spec)
    assert isinstance(enc.blocks[0].ls1, torch.nn.Identity) and not enc.pos_embed.requires_grad


@pytest.mark.parametrize("no_embed_class", [False, True])
@pytest.mark.parametrize("pos_embed", ["sincos", "learned"])
def test_register_tokens_in_both_timm_layouts_match_timm_on_every_path(no_embed_class, pos_embed):
    """Registers after CLS, with positions (timm's default) or without (no_embed_class, DINOv2's):
    timm's forward_features, the visible-token path and the any-size path agree, and a subset of
    visible patches is the same as running those patches alone."""
    enc = build_encoder(encoder_spec("vit_tiny", 16, 4, 1, embed_dim=32, depth=2, num_heads=2, layer_scale=0.5,
                                     pos_embed=pos_embed, reg_tokens=3, no_embed_class=no_embed_class)).eval()
    with torch.no_grad():
        enc.reg_token.normal_()  # timm starts them near zero, where a misplaced register would not show
    assert enc.num_prefix_tokens == 4 and enc.pos_embed.shape[1] == (16 if no_embed_class else 20)
    if pos_embed == "sincos":  # zero rows for the prefix tokens with a position, then the grid's table
        assert torch.count_nonzero(enc.pos_embed[0, : 0 if no_embed_class else 4]) == 0
        assert torch.equal(enc.pos_embed[:, -16:], sincos_2d(32, 4, cls_token=False))
    ref = VisionTransformer(**enc.spec.timm_kwargs()).eval()
    ref.load_state_dict(enc.state_dict(), strict=True)
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        want = ref.forward_features(x)
        assert want.shape[1] == 4 + 16
        torch.testing.assert_close(enc.forward_features(x), want, atol=1e-5, rtol=0)
        torch.testing.assert_close(enc.forward_visible(patchify(x, 4)), want, atol=1e-5, rtol=0)
        torch.testing.assert_close(enc.forward_image(x), want, atol=1e-5, rtol=0)
        ids = torch.tensor([[0, 5, 9], [15, 2, 3]])
        sub = enc.forward_visible(patchify(x, 4), ids)
        alone = enc.forward_tokens(gather_tokens(enc.embed_patches(patchify(x, 4)), ids))
        assert sub.shape == (2, 4 + 3, 32)
        torch.testing.assert_close(sub, alone, atol=1e-5, rtol=0)
        assert enc.forward_image(torch.randn(2, 1, 24, 24)).shape == (2, 4 + 36, 32)
