"""Training compute of a run: FLOPs per training image x images seen, and wall time.

Runs are compared at equal compute, not only at equal epochs: a LUT step costs about 2.7x an MAE
step (two views, a teacher, two heads). FLOPs are counted the way `unmasked bench` counts them
(torch.utils.flop_counter, explicit attention) over one small training step (forward and
backward) of the run's objective, built from its config.json. The count per image depends only on
the config, so it is cached in <run>/compute.json.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from unmasked.bench import _restore_attention, _use_explicit_attention
from unmasked.build import augment_spec, build_objective
from unmasked.config import PretrainConfig, read_run_config
from unmasked.errors import UserError
from unmasked.files import atomic_write_text
from unmasked.rng import BatchRandom

COMPUTE_FILE = "compute.json"
COUNT_BATCH = 2  # BatchNorm in LUT's heads needs more than one image


def _config_key(cfg: dict) -> str:
    return hashlib.sha1(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]


def count_flops_per_image(cfg: PretrainConfig) -> float:
    """FLOPs of one training step (forward + backward) per image, on the CPU, in float32."""
    torch.manual_seed(cfg.seed)
    obj = build_objective(cfg).train()
    c = cfg.in_chans or 1
    # each view at its own size (multi-crop objectives have smaller local crops)
    views = [torch.randn(COUNT_BATCH, c, v.img_size, v.img_size) for v in obj.view_specs(augment_spec(cfg))]
    old = _use_explicit_attention(obj)  # as bench: the counter does not see every fused SDPA kernel
    try:
        with FlopCounterMode(display=False) as counter:
            loss, _ = obj(views, BatchRandom(cfg.seed, 0, 0, COUNT_BATCH))
            loss.backward()
    finally:
        _restore_attention(old)
    return counter.get_total_flops() / COUNT_BATCH


def training_compute(run_dir) -> dict:
    """{"flops_per_image", "images_seen", "train_flops", "time_s"} of a run folder."""
    run = Path(run_dir)
    cfg_path = run / "config.json"
    if not cfg_path.is_file():
        raise UserError(f"{run}: no config.json; training compute is read from a folder written by "
                        "`unmasked pretrain`")
    cfg_dict = read_run_config(cfg_path)
    key = _config_key(cfg_dict)
    cache = run / COMPUTE_FILE
    flops = None
    try:
        cached = json.loads(cache.read_text())
        if cached.get("config_key") == key:
            flops = float(cached["flops_per_image"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # not counted yet, or counted for another config
    if flops is None:
        flops = count_flops_per_image(PretrainConfig.from_dict(cfg_dict))
        try:
            atomic_write_text(cache, json.dumps({"flops_per_image": flops, "config_key": key,
                                                 "counted_with": "torch.utils.flop_counter, one training step "
                                                                 "(forward + backward), as unmasked bench"},
                                                indent=2) + "\n")
        except OSError:
            pass  # a read-only run folder is counted again next time
    summary_path = run / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    images = int(summary.get("images_seen", 0))
    return {"flops_per_image": flops, "images_seen": images, "train_flops": flops * images,
            "time_s": float(summary.get("time_s", 0.0))}
