import torch

from unmasked.models.patches import normalize_patches, patchify, unpatchify


def test_patchify_unpatchify_round_trip():
    x = torch.randn(3, 3, 32, 32)
    p = patchify(x, 8)
    assert p.shape == (3, 16, 8 * 8 * 3)
    assert torch.equal(unpatchify(p, 8, 3), x)


def test_patchify_layout_is_row_col_channel():
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)
    p = patchify(x, 2)
    # first patch = rows 0-1, cols 0-1; values interleaved by channel
    assert p[0, 0].tolist() == [0, 16, 1, 17, 4, 20, 5, 21]
    # second patch is to the right of the first (row-major grid)
    assert p[0, 1, 0].item() == 2


def test_norm_pix_target_statistics():
    patches = torch.randn(4, 10, 48) * 5 + 3
    normed, mean, std = normalize_patches(patches)
    assert torch.allclose(normed.mean(-1), torch.zeros(4, 10), atol=1e-5)
    assert torch.allclose(normed.var(-1), torch.ones(4, 10), atol=1e-3)
    assert torch.allclose(normed * std + mean, patches, atol=1e-4)
