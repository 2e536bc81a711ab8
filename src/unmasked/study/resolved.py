"""What `unmasked pretrain` would resolve a study run's options to (read by the runner's changed-
study check and by compute matching)."""

from __future__ import annotations

import copy
from pathlib import Path

from unmasked.config import PretrainConfig, all_option_fields, resolve_defaults
from unmasked.data.dataset import is_fashion_mnist
from unmasked.data.recipe import small_images
from unmasked.errors import UserError


def expected_config(options: dict, _small: dict = {}):  # noqa: B006 - a cache of folder scans, per process
    """What `unmasked pretrain` resolves the run's options to: the objective's defaults and, on an
    image folder, the recipe its images choose (the small-image recipe or the published one), so an
    option deleted from the study file is compared with the default the run would get now."""
    known = {f.name for f in all_option_fields()}
    cfg = PretrainConfig.flat(**{k: v for k, v in options.items() if k in known})
    if is_fashion_mnist(cfg.data):
        return resolve_defaults(cfg, True)
    key = (str(Path(cfg.data).expanduser().resolve()), cfg.unlabeled, cfg.img_size, cfg.patch_size)
    if key not in _small:
        probe = copy.copy(cfg)
        try:
            small = small_images(probe, quiet=True)
        except UserError:
            return None  # the data cannot be read now: pretrain will say why
        _small[key] = (small, probe.img_size)
    small, cfg.img_size = _small[key]
    return resolve_defaults(cfg, small)
