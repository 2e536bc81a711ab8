"""Teacher targets: centring with an EMA centre (DINO) or Sinkhorn-Knopp (SwAV, DINOv2 ViT-L/g).

The centre is a buffer, so a checkpoint's `objective.state_dict()` carries it and a resumed run
continues exactly. Its update is *deferred to the optimiser step*: each forward adds its teacher
outputs to a pending sum, and `apply_update` (called from `update_teacher`, after the optimiser
step) folds the step's mean into the centre once. The official code has no gradient
accumulation, one forward per step; folding the whole step's mean once keeps a step with
--accum-steps k equal to one big-batch step, instead of k centre updates at momentum 0.9 each.
Under torch.distributed the pending sums are all-reduced, so N processes give the centre of the
global batch, as one process does.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _all_reduce(t: torch.Tensor, op=None) -> torch.Tensor:
    if _distributed():
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t


class Centering(nn.Module):
    """softmax((t - c) / T) with c an EMA (momentum 0.9) of the teacher's batch-mean output."""

    def __init__(self, dim: int, momentum: float = 0.9):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("center", torch.zeros(1, dim))
        # this step's outputs, not yet folded in; empty again after every optimiser step
        self.register_buffer("pending", torch.zeros(1, dim + 1), persistent=False)

    def softmax(self, teacher_logits: torch.Tensor, temp: float) -> torch.Tensor:
        return F.softmax((teacher_logits.float() - self.center) / temp, dim=-1)

    @torch.no_grad()
    def accumulate(self, teacher_logits: torch.Tensor) -> None:
        t = teacher_logits.detach().float()
        self.pending[:, :-1] += t.sum(dim=0, keepdim=True)
        self.pending[:, -1] += t.shape[0]

    @torch.no_grad()
    def apply_update(self) -> None:
        """c = m c + (1 - m) mean(pending); skipped when nothing (or nothing finite) is pending."""
        total = _all_reduce(self.pending.clone())
        count = total[:, -1:]
        mean = total[:, :-1] / count.clamp(min=1)
        updated = self.center * self.momentum + mean * (1 - self.momentum)
        ok = (count > 0) & torch.isfinite(mean).all()  # no host sync: a tensor condition
        self.center.copy_(torch.where(ok, updated, self.center))
        self.pending.zero_()


@torch.no_grad()
def sinkhorn_knopp(teacher_logits: torch.Tensor, temp: float, iterations: int = 3) -> torch.Tensor:
    """Sinkhorn-Knopp targets (B, K): each row sums to 1, each prototype gets about B/K in total.

    DINOv2's `sinkhorn_knopp_teacher` with two differences: the all-reduces run only when
    torch.distributed is initialised (the official code calls them unconditionally and crashes in
    one process), and the global maximum is subtracted before exp (the first normalisation
    divides it out) so large logits cannot overflow.
    """
    t = teacher_logits.float()
    if t.shape[0] == 0 and not _distributed():
        return t
    peak = t.max() if t.numel() else t.new_tensor(float("-inf"))
    peak = _all_reduce(peak.clone(), dist.ReduceOp.MAX if _distributed() else None)
    q = torch.exp((t - peak) / temp).T  # K x B
    n = _all_reduce(torch.tensor(float(q.shape[1]), device=q.device))
    k = q.shape[0]
    q /= _all_reduce(q.sum()).clamp(min=1e-30)
    for _ in range(iterations):
        q /= _all_reduce(q.sum(dim=1, keepdim=True)).clamp(min=1e-30)  # prototypes: equal mass
        q /= k
        q /= q.sum(dim=0, keepdim=True).clamp(min=1e-30)  # samples: each a distribution
        q /= n
    q *= n
    return q.T
