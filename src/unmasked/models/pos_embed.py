"""Fixed 2-D sine-cosine position embeddings (MAE style)."""

import torch


def _sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """(N,) positions -> (N, dim): half sines, half cosines over geometric frequencies."""
    if dim % 2:
        raise ValueError(f"1-D sin-cos embedding needs an even width, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / (10000.0**omega)
    angles = positions.double()[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(dim: int, grid: int | tuple[int, int], cls_token: bool = True) -> torch.Tensor:
    """Position embedding for a (rows x cols) patch grid, (1, [1 +] rows*cols, dim), float32.

    The first half of the channels encodes the column, the second half the row, as in MAE's
    `get_2d_sincos_pos_embed` (its meshgrid puts w first), so that official weights map one to one.
    The CLS position, when present, is all zeros (as in MAE).
    """
    rows, cols = (grid, grid) if isinstance(grid, int) else grid
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs a width divisible by 4, got {dim}")
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    emb = torch.cat([_sincos_1d(dim // 2, c.flatten()), _sincos_1d(dim // 2, r.flatten())], dim=1)
    if cls_token:
        emb = torch.cat([torch.zeros(1, dim, dtype=emb.dtype), emb], dim=0)
    return emb.float().unsqueeze(0)


def grid_size(img_size: int, patch_size: int) -> int:
    return img_size // patch_size


def num_patches(img_size: int, patch_size: int) -> int:
    return grid_size(img_size, patch_size) ** 2


