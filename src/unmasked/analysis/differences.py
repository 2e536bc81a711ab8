"""What differs between runs besides the objective: the settings that change a result on their own.

A comparison isolates the objective only when crop, pad, learning-rate rule and peak, epochs,
batch, mask ratio, precision, data and seed agree; `compare` lists those that do not and warns.
"""

from __future__ import annotations

from unmasked.config import PretrainConfig

# (label, how to read it from a saved config)
COMPARED = (
    ("crop", lambda c: c.crop),
    ("pad", lambda c: c.pad if c.crop == "pad" else None),
    ("crop scale min", lambda c: c.crop_scale_min if c.crop == "rrc" else None),
    ("lr rule", lambda c: "absolute --lr" if c.lr is not None else c.lr_scaling),
    ("peak lr", lambda c: float(f"{c.peak_lr():.3g}")),
    ("epochs", lambda c: c.epochs),
    ("batch", lambda c: c.batch_size),
    ("mask ratio", lambda c: c.mask_ratio),
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
