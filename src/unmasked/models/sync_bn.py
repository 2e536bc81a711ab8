"""BatchNorm1d whose batch statistics span all processes (CPU/gloo and CUDA/NCCL alike).

torch.nn.SyncBatchNorm only runs on accelerators; this one uses the differentiable
torch.distributed.nn all_reduce, so a 2-process run with batch b each normalises exactly like a
1-process run with batch 2b. Outside a process group it is plain BatchNorm1d.
"""

import torch
import torch.distributed as dist
import torch.nn as nn


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class SyncBatchNorm1d(nn.BatchNorm1d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and _distributed()):
            return super().forward(x)
        # only a distributed run needs it (importing torch.distributed.nn also loads its RPC modules)
        from torch.distributed.nn.functional import all_reduce

        xf = x.float()
        count = torch.full((1,), float(x.shape[0]), device=x.device)
        stats = all_reduce(torch.cat([xf.sum(0), (xf * xf).sum(0), count]))
        c = x.shape[1]
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp(min=0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1).clamp(min=1), alpha=m)
        y = (xf - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            y = y * self.weight + self.bias
        return y.to(x.dtype)



