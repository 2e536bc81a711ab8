"""Linear probe on frozen features (the MAE protocol, sized to the dataset).

Head: BatchNorm1d without affine (eps 1e-6) + Linear (trunc-normal std 0.01). Optimiser: SGD with
momentum 0.9 by default, or MAE's LARS (trust coefficient 0.001) with optimizer="lars"; weight
decay 0, lr = 0.1 * batch / 256, 90 epochs with 10 of linear warm-up then cosine. Why SGD by
default: LARS's relative step is lr * 0.001 per step, so the total movement per epoch scales with
the dataset size; it suits ImageNet's 1.28 M images but under-trains small datasets (measured on
the demo's LUT encoder, 60,000 Fashion-MNIST images: LARS 78.73% vs SGD 81.34% CLS top-1).
MAE uses batch 16,384 on ImageNet; here the batch is the largest power of two up to 16,384 that
still gives at least 16 steps per epoch, so small datasets get enough steps. Features are
computed once per encoder and cached, so the probe takes seconds.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn as nn
from safetensors.torch import save_file
from timm.optim import Lars
from torch.nn.init import trunc_normal_

from unmasked.data.dataset import ImageData
from unmasked.eval.common import (
    evaluation_view,
    feature_precision,
    frozen_features,
    is_own_data,
    result_envelope,
    variant_name,
    write_result,
)
from unmasked.eval.knn import EVAL_SIZE_HELP, topk_accuracy
from unmasked.eval.pixels import cached_pixel_result
from unmasked.eval.run_files import save_in_run
from unmasked.eval.view import EvalView
from unmasked.options import CHOICE, count, opt, positive, positive_int
from unmasked.train.schedules import lr_schedule


@dataclass
class LinearRecipe:
    """`unmasked eval linear`'s probe recipe: another recipe writes its own result file."""

    epochs: int = opt(90, "probe epochs", rule=positive_int())
    warmup_epochs: int = opt(10, "warm-up epochs", rule=count("no warm-up"))
    optimizer: str = opt("sgd", "sgd: momentum SGD (default); lars: MAE's LARS (trust coefficient 0.001), "
                         "whose steps suit ImageNet-sized datasets but under-train small ones",
                         choices=("sgd", "lars"), rule=CHOICE)
    base_lr: float = opt(0.1, "base lr, scaled by batch / 256", rule=positive())
    probe_batch: int | None = opt(None, "probe batch size (default: sized to the data)", rule=positive_int())
    img_size: int | None = opt(None, EVAL_SIZE_HELP, metavar="PX", rule=positive_int())


def probe_batch_size(n: int, max_batch: int = 16384, min_steps: int = 16) -> int:
    b = 2 ** int(math.floor(math.log2(max(n // min_steps, 1))))
    return int(max(16, min(max_batch, b)))


def linear_head(dim: int, num_classes: int) -> nn.Sequential:
    head = nn.Sequential(nn.BatchNorm1d(dim, affine=False, eps=1e-6), nn.Linear(dim, num_classes))
    trunc_normal_(head[1].weight, std=0.01)
    nn.init.zeros_(head[1].bias)
    return head


def fold_batchnorm(head: nn.Sequential) -> nn.Linear:
    """The affine-free BatchNorm (in eval mode) folded into the Linear: one layer, same predictions."""
    bn, fc = head[0], head[1]
    inv = torch.rsqrt(bn.running_var + bn.eps)
    folded = nn.Linear(fc.in_features, fc.out_features)
    with torch.no_grad():
        folded.weight.copy_(fc.weight * inv)
        folded.bias.copy_(fc.bias - (fc.weight * inv) @ bn.running_mean)
    return folded


OPTIMIZERS = ("sgd", "lars")


def probe_optimizer(head: nn.Module, lr: float, kind: str = "sgd") -> torch.optim.Optimizer:
    """SGD with momentum, or MAE's LARS: the trust ratio scales the update of matrix weights even
    without weight decay (timm adapts then only when asked: always_adapt); biases take plain
    momentum-SGD steps."""
    if kind == "sgd":
        return torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=0.0)
    if kind != "lars":
        raise ValueError(f"optimizer {kind!r}: expected one of {OPTIMIZERS}")
    matrices = [p for p in head.parameters() if p.ndim > 1]
    vectors = [p for p in head.parameters() if p.ndim <= 1]
    return Lars([{"params": matrices, "always_adapt": True}, {"params": vectors, "always_adapt": False}],
                lr=lr, momentum=0.9, weight_decay=0.0, trust_coeff=0.001)


def train_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    num_classes: int,
    epochs: int = 90,
    warmup_epochs: int = 10,
    base_lr: float = 0.1,
    batch_size: int | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    optimizer: str = "sgd",
) -> tuple[nn.Sequential, dict]:
    device = torch.device(device)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    n, dim = train_x.shape
    batch = batch_size or probe_batch_size(n)
    batch = min(batch, n)
    steps_per_epoch = max(n // batch, 1)
    total = epochs * steps_per_epoch
    lr = base_lr * batch / 256
    lrs = lr_schedule(lr, total, warmup_epochs * steps_per_epoch)
    head = linear_head(dim, num_classes).to(device)
    opt = probe_optimizer(head, lr, optimizer)
    x, y = train_x.float().to(device), train_y.to(device)
    loss_fn = nn.CrossEntropyLoss()
    step = 0
    head.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g).to(device)
        for i in range(steps_per_epoch):
            idx = perm[i * batch : (i + 1) * batch]
            for grp in opt.param_groups:
                grp["lr"] = float(lrs[step])
            loss = loss_fn(head(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    head.eval()
    name = "LARS (trust coefficient 0.001 on weights, biases plain SGD)" if optimizer == "lars" else "SGD"
    info = {"optimizer": name, "momentum": 0.9, "weight_decay": 0.0, "batch_size": batch, "peak_lr": lr,
            "base_lr": base_lr, "epochs": epochs, "warmup_epochs": warmup_epochs, "steps": total,
            "final_train_loss": float(loss.detach())}
    return head, info


@torch.no_grad()
def evaluate_probe(head: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int) -> dict:
    head.eval()
    dev = next(head.parameters()).device
    logits = head(x.float().to(dev)).cpu()
    res = {"top1": topk_accuracy(logits, y, 1)}
    if num_classes > 5:
        res["top5"] = topk_accuracy(logits, y, 5)
    return res


def pixel_linear(ds: ImageData, view: EvalView, recipe: dict, device: torch.device) -> dict:
    """The linear probe on raw pixels, same recipe: {"top1", "top5", "train_top1", "input", "cached"}."""
    def compute(tr_x, tr_y, te_x, te_y):
        c = len(ds.classes)
        head, _ = train_probe(tr_x, tr_y, c, device=device, **recipe)
        return {**evaluate_probe(head, te_x, te_y, c), "train_top1": evaluate_probe(head, tr_x, tr_y, c)["top1"]}

    return cached_pixel_result(ds, view, {"protocol": "linear", **recipe}, compute)


# The recipe `compare` shows under "linear" (run_linear's and the CLI's defaults).
DEFAULT_RECIPE = dict(epochs=90, warmup_epochs=10, base_lr=0.1, probe_batch=None, optimizer="sgd", seed=0)


def recipe_variant(**settings) -> list[str]:
    """The settings that differ from the default recipe, as file-name parts ("epochs30")."""
    return [f"{k.replace('_', '')}{v:g}" if isinstance(v, float) else f"{k.replace('_', '')}{v}"
            for k, v in {**DEFAULT_RECIPE, **settings}.items() if DEFAULT_RECIPE[k] != v]


def result_file(**settings) -> str:
    """linear.json for the default recipe on the run's own data, else the variant's own file."""
    return "linear" + "".join(f"-{p}" for p in recipe_variant(**settings)) + ".json"


def run_linear(path, recipe: LinearRecipe | None = None, data: str | None = None, device: str = "auto",
               batch_size: int = 256, num_workers: int = 0, progress: bool = True, seed: int = 0) -> dict:
    """Linear probe on CLS and mean-pooled features with `recipe` (default: LinearRecipe()); writes
    <run>/linear.json and the folded heads."""
    t0 = time.perf_counter()
    r = recipe or LinearRecipe()
    loaded, ds, dev, tr, te = frozen_features(path, data, device, batch_size, num_workers, progress,
                                              "the linear probe", r.img_size)
    c = len(ds.classes)
    results, heads, info = {}, {}, {}
    for kind in ("cls", "mean"):
        head, info = train_probe(tr[kind], tr["labels"], c, r.epochs, r.warmup_epochs, r.base_lr, r.probe_batch,
                                 seed, dev, r.optimizer)
        results[kind] = evaluate_probe(head, te[kind], te["labels"], c)
        results[kind]["train_top1"] = evaluate_probe(head, tr[kind], tr["labels"], c)["top1"]
        results[kind]["final_train_loss"] = info.pop("final_train_loss")
        folded = fold_batchnorm(head.cpu())
        heads[f"{kind}.weight"], heads[f"{kind}.bias"] = folded.weight.detach(), folded.bias.detach()
    settings = dict(epochs=r.epochs, warmup_epochs=r.warmup_epochs, base_lr=r.base_lr, probe_batch=r.probe_batch,
                    optimizer=r.optimizer, seed=seed)
    variant = recipe_variant(**settings) + ([f"img{loaded.eval_size}"] if loaded.eval_size else [])
    pixel_recipe = dict(epochs=r.epochs, warmup_epochs=r.warmup_epochs, base_lr=r.base_lr,
                        batch_size=r.probe_batch, seed=seed, optimizer=r.optimizer)
    pixels = pixel_linear(ds, evaluation_view(loaded, ds.name), pixel_recipe, dev)
    heads_problem = save_in_run(loaded.run_dir, variant_name("linear_heads", variant, loaded, ds, ".safetensors"),
                                lambda tmp: save_file({k: v.contiguous() for k, v in heads.items()}, tmp))
    result = result_envelope(
        "linear", f"frozen features, BatchNorm1d(affine=False) + Linear, {info['optimizer']}, warm-up + cosine",
        loaded, ds, file=variant_name("linear", variant, loaded, ds),
        default_protocol=is_own_data(loaded, ds) and not variant,
        top1={k: v["top1"] for k, v in results.items()}, results=results, pixels=pixels,
        precision=feature_precision(dev), time_s=time.perf_counter() - t0, recipe=info,
    )
    if heads_problem:
        result["not_saved"] = [heads_problem]
    write_result(loaded, result["file"], result)
    return result
