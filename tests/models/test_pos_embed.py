import numpy as np
import torch

from unmasked.models.pos_embed import sincos_2d


def _mae_formula(dim: int, grid: int) -> np.ndarray:
    """MAE's get_2d_sincos_pos_embed, re-derived from its formula: meshgrid(w, h) puts the column
    first, so the first dim/2 channels encode the column and the last dim/2 the row; each half is
    [sin(pos * w_k), cos(pos * w_k)] with w_k = 1 / 10000^(k / (dim/4))."""
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))
    rows = []
    for r in range(grid):
        for c in range(grid):
            col = np.concatenate([np.sin(c * omega), np.cos(c * omega)])
            row = np.concatenate([np.sin(r * omega), np.cos(r * omega)])
            rows.append(np.concatenate([col, row]))
    return np.concatenate([np.zeros((1, dim)), np.array(rows)], axis=0)


def test_sincos_matches_mae_channel_order():
    emb = sincos_2d(32, 5)[0]
    ref = torch.from_numpy(_mae_formula(32, 5)).float()
    assert torch.allclose(emb, ref, atol=1e-6)


def test_first_half_encodes_the_column():
    emb = sincos_2d(16, 4)[0, 1:].view(4, 4, 16)  # (row, col, dim)
    first, second = emb[..., :8], emb[..., 8:]
    assert torch.equal(first[0], first[3])  # same column, different rows: same first half
    assert not torch.equal(first[:, 0], first[:, 3])
    assert torch.equal(second[:, 0], second[:, 3])  # same row: same second half
