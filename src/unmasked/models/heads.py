"""Projection / prediction MLPs for the LUT global-context loss."""

import torch.nn as nn

from unmasked.models.sync_bn import SyncBatchNorm1d


class MLPHead(nn.Sequential):
    """Linear (no bias) -> BatchNorm -> ReLU -> Linear (no bias), as in LUT's projector/predictor.

    The BatchNorm synchronises its statistics across processes under torchrun. The Linear layers are
    xavier-uniform, as the published LUT model gives them (`self.apply(self._init_weights)` runs
    after the heads are built), not torch's default Kaiming-uniform.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__(
            nn.Linear(in_dim, hidden_dim, bias=False),
            SyncBatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim, bias=False),
        )
        for layer in (self[0], self[3]):
            nn.init.xavier_uniform_(layer.weight)
