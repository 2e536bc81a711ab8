"""The DINO projection head: MLP -> L2 normalisation -> weight-normalised prototypes."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class WeightNormLinear(nn.Module):
    """Linear without bias whose rows are g * v / ||v|| (weight normalisation, one g per output).

    Written out rather than through torch's weight_norm parametrisation so the state dict keys
    (`weight_g`, `weight_v`) are plain and the EMA update sees two ordinary parameters.
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.weight_v = nn.Parameter(torch.empty(out_dim, in_dim))
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1))  # DINO fills g with 1 (and DINOv2 trains it)
        nn.init.trunc_normal_(self.weight_v, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight_g * self.weight_v / self.weight_v.norm(dim=1, keepdim=True).clamp(min=1e-12)
        return F.linear(x, w)


class DINOHead(nn.Module):
    """Linear(d, h), GELU, Linear(h, h), GELU, Linear(h, bottleneck), L2-normalise, prototypes (K).

    Trunc-normal (std 0.02) init with zero biases and no BatchNorm, as in DINOv2's head.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim), nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.mlp(x)
        # DINOv2 takes a larger eps under fp16, where 1e-12 underflows
        z = F.normalize(z, dim=-1, p=2, eps=1e-6 if z.dtype == torch.float16 else 1e-12)
        return self.last_layer(z)
