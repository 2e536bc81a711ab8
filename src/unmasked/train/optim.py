"""AdamW with MAE's parameter groups, each carrying the scales the per-step schedules apply.

Every group has `lr_scale` and `wd_scale` (the loop sets lr = lr[step] * lr_scale and
weight_decay = wd[step] * wd_scale) and `last_layer` (held at lr 0 while the objective freezes
its last layer). With the default options there are exactly two groups (decay, no decay), as in
earlier runs, so their optimiser state still loads.
"""

import re

import torch
import torch.nn as nn

TOKEN_KEYWORDS = ("token", "pos_embed")
GROUP_KEYS = ("lr_scale", "wd_scale", "last_layer")


def encoder_layer_id(name: str, num_blocks: int) -> int:
    """0 for the embeddings, l + 1 for block l, num_blocks + 1 for everything after (BEiT/MAE's rule)."""
    if (re.search(r"(^|\.)encoder\.(patch_embed|cls_token|pos_embed|reg_token|mask_token)", name)
            or name == "mask_token"):
        return 0
    m = re.search(r"(^|\.)encoder\.blocks\.(\d+)\.", name)
    if m:
        return int(m.group(2)) + 1
    return num_blocks + 1


def lr_scale_of(name: str, num_blocks: int, layer_decay: float | None, patch_embed_lr_mult: float) -> float:
    scale = 1.0
    if layer_decay is not None:
        scale = layer_decay ** (num_blocks + 1 - encoder_layer_id(name, num_blocks))
    if re.search(r"(^|\.)encoder\.patch_embed\.", name):
        scale *= patch_embed_lr_mult
    return scale


def param_groups(model: nn.Module, weight_decay: float, decay_tokens: bool = True, layer_decay: float | None = None,
                 patch_embed_lr_mult: float = 1.0, num_blocks: int = 0,
                 last_layer: list[nn.Parameter] = ()) -> list[dict]:
    """No weight decay on 1-D tensors (biases, norms). The CLS and mask tokens are decayed by default:
    the published MAE and LUT code uses timm's `add_weight_decay`, which exempts only 1-D tensors
    and biases, so their (1, 1, D) tokens are decayed. decay_tokens=False exempts them too (a common
    variant; the fixed sin-cos positions are never trained either way). Parameters with the same
    (decay, lr scale, last layer) share a group; decaying groups first."""
    last_ids = {id(p) for p in last_layer}
    groups: dict[tuple, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = not (p.ndim <= 1 or (not decay_tokens and any(k in name for k in TOKEN_KEYWORDS)))
        scale = lr_scale_of(name, num_blocks, layer_decay, patch_embed_lr_mult)
        key = (not decay, scale, id(p) in last_ids)
        if key not in groups:
            groups[key] = {"params": [], "weight_decay": weight_decay if decay else 0.0, "lr_scale": scale,
                           "wd_scale": 1.0 if decay else 0.0, "last_layer": id(p) in last_ids}
        groups[key]["params"].append(p)
    return [groups[k] for k in sorted(groups, key=lambda k: k[0])]  # stable: decaying groups first


def _implementation(device: torch.device) -> dict:
    return {"fused": True, "foreach": None} if device.type == "cuda" else {"fused": None, "foreach": True}


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, device: torch.device,
                    betas: tuple[float, float] = (0.9, 0.95), **group_options):
    return torch.optim.AdamW(param_groups(model, weight_decay, **group_options), lr=lr, betas=betas,
                             **_implementation(device))


def match_device(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """load_state_dict restores the saved run's fused/foreach flags; a run resumed on another kind
    of device uses the implementation that suits this one."""
    for g in optimizer.param_groups:
        g.update(_implementation(device))


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict, device: torch.device) -> None:
    """load_state_dict replaces each group's settings by the saved ones; the scales belong to this
    run's options (older checkpoints have none), so they are kept."""
    scales = [{k: g[k] for k in GROUP_KEYS} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for g, s in zip(optimizer.param_groups, scales):
        g.update(s)
    match_device(optimizer, device)


def set_step_hyperparameters(optimizer: torch.optim.Optimizer, lr: float, weight_decay: float,
                             freeze_last_layer: bool) -> None:
    """lr and weight decay of one step, scaled per group; a frozen last layer gets lr 0."""
    for g in optimizer.param_groups:
        frozen = freeze_last_layer and g.get("last_layer", False)
        g["lr"] = 0.0 if frozen else lr * g.get("lr_scale", 1.0)
        g["weight_decay"] = weight_decay * g.get("wd_scale", 1.0 if g["weight_decay"] else 0.0)
