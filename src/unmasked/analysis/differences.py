"""What differs between runs besides the objective: the settings that change a result on their own.

A comparison isolates the objective only when crop, pad, learning-rate rule and peak, weight decay,
gradient clipping, epochs, batch, mask ratio, precision, data and seed agree; `compare` lists those
that do not and warns. A setting an objective does not use (DINOv2 has its own multi-crop and no
mask ratio) is shown as "-" for its runs rather than compared.
"""

from __future__ import annotations

from unmasked.config import PretrainConfig
from unmasked.objectives import registry

NOT_USED = "-"


def _owned(option: str, read):
    """Read a setting only for runs whose objective has that option (others do not use it)."""
    def get(c):
        return read(c) if c.has_option(option) else NOT_USED
    return get


def _crop(read):
    """The shared crop settings matter only to objectives whose views use them (not DINOv2's multi-crop)."""
    def get(c):
        return read(c) if registry.get(c.objective).objective.shared_crop else NOT_USED
    return get


# (label, how to read it from a saved config)
COMPARED = (
    ("crop", _crop(lambda c: c.crop)),
    ("pad", _crop(lambda c: c.pad if c.crop == "pad" else None)),
    ("crop scale min", _crop(lambda c: c.crop_scale_min if c.crop == "rrc" else None)),
    ("lr rule", lambda c: "absolute --lr" if c.lr is not None else c.lr_scaling),
    ("peak lr", lambda c: float(f"{c.peak_lr():.3g}")),
    ("weight decay", lambda c: (c.weight_decay, c.weight_decay_end) if c.weight_decay_end is not None
     else c.weight_decay),
    ("gradient clip", lambda c: c.clip_grad),
    ("epochs", lambda c: c.epochs),
    ("batch", lambda c: c.batch_size),
    ("mask ratio", _owned("mask_ratio", lambda c: c.option("mask_ratio"))),
    ("precision", lambda c: c.precision),
    ("data", lambda c: c.data),
    ("subset", lambda c: c.subset),
    ("seed", lambda c: c.seed),
)


def config_differences(configs: list[dict]) -> list[tuple[str, list]]:
    """[(setting, [value per run])] for every compared setting on which the runs disagree."""
    cfgs = [PretrainConfig.from_dict(c) for c in configs]
    out = []
    for label, read in COMPARED:
        values = [read(c) for c in cfgs]
        if len({repr(v) for v in values}) > 1:
            out.append((label, values))
    return out
