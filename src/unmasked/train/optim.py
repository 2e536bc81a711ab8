"""AdamW with MAE's parameter groups."""

import torch
import torch.nn as nn

TOKEN_KEYWORDS = ("token", "pos_embed")


def param_groups(model: nn.Module, weight_decay: float, decay_tokens: bool = True) -> list[dict]:
    """No weight decay on 1-D tensors (biases, norms). The CLS and mask tokens are decayed by default:
    the published MAE and LUT code uses timm's `add_weight_decay`, which exempts only 1-D tensors
    and biases, so their (1, 1, D) tokens are decayed. decay_tokens=False exempts them too (a common
    variant; the fixed sin-cos positions are never trained either way)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or (not decay_tokens and any(k in name for k in TOKEN_KEYWORDS)):
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _implementation(device: torch.device) -> dict:
    return {"fused": True, "foreach": None} if device.type == "cuda" else {"fused": None, "foreach": True}


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, device: torch.device,
                    decay_tokens: bool = True):
    return torch.optim.AdamW(param_groups(model, weight_decay, decay_tokens), lr=lr, betas=(0.9, 0.95),
                             **_implementation(device))


def match_device(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """load_state_dict restores the saved run's fused/foreach flags; a run resumed on another kind
    of device uses the implementation that suits this one."""
    for g in optimizer.param_groups:
        g.update(_implementation(device))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr
