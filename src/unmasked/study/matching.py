"""`match_compute = "ARM"` in a study arm: its epochs set so that its training FLOPs equal ARM's.

Training FLOPs are counted as the study's compute column counts them (unmasked.analysis.compute:
one training step, forward and backward, per image, times the images seen), here from the options
the study gives each run, before anything runs. Epochs are whole numbers, so the matched arm gets
the nearest whole number of epochs (at least 1); what is left over is printed as a ratio, e.g.
"1.04x lut's FLOPs", by `--dry-run` and in the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from unmasked.analysis.compute import count_flops_per_image
from unmasked.data.dataset import is_fashion_mnist
from unmasked.errors import UserError
from unmasked.study.budget import run_budget
from unmasked.study.resolved import expected_config

if TYPE_CHECKING:  # spec imports this module
    from unmasked.study.spec import Run

KEY = "match_compute"


@dataclass
class Match:
    arm: str
    reference: str
    point: dict
    ref_epochs: int
    ref_flops: float  # the reference arm's training FLOPs
    flops_per_image: float  # the matched arm's
    ref_flops_per_image: float
    images_per_epoch: int  # the matched arm's
    exact_epochs: float  # ref_flops / (flops_per_image x images_per_epoch)
    epochs: int

    @property
    def ratio(self) -> float:
        """The matched arm's training FLOPs over the reference's, after rounding the epochs."""
        return self.epochs * self.images_per_epoch * self.flops_per_image / self.ref_flops

    def why(self) -> str:
        return (f"epochs {self.epochs} from {KEY} = {self.reference!r}: {self.reference} trains "
                f"{self.ref_epochs} epoch(s) at {self.ref_flops_per_image / 1e9:.3g} GFLOPs per image = "
                f"{self.ref_flops / 1e15:.4g} PFLOPs; {self.arm} costs {self.flops_per_image / 1e9:.3g} GFLOPs "
                f"per image x {self.images_per_epoch:,} images per epoch, so {self.exact_epochs:.2f} epochs, "
                f"rounded to {self.epochs}: {self.ratio:.2f}x {self.reference}'s training FLOPs")


def _flops_and_images(run: Run, where: str) -> tuple[float, int, int]:
    """(FLOPs per training image, images per epoch, epochs) of a run the study would start."""
    cfg = expected_config(run.options)
    if cfg is None:
        raise UserError(f"{where}: {KEY}: cannot read the data {run.options.get('data')!r} to count the "
                        "training FLOPs")
    b = run_budget(run.options, {})
    if not b["images_seen"]:
        raise UserError(f"{where}: {KEY}: cannot count the training images of {run.options.get('data')!r}")
    # resolved from the data when the run starts; the count needs them now (the statistics' values
    # do not change the FLOPs, the channels change only the patch embedding's)
    if cfg.in_chans is None:
        cfg.in_chans = cfg.channels or (1 if is_fashion_mnist(cfg.data) else 3)
    if cfg.mean is None or cfg.std is None:
        cfg.mean, cfg.std = [0.5] * cfg.in_chans, [0.25] * cfg.in_chans
    return count_flops_per_image(cfg), b["images_seen"] // b["epochs"], b["epochs"]


def match_epochs(arm: str, reference: str, point: dict, arm_run: Run, ref_run: Run, where: str) -> Match:
    """The whole number of epochs that brings arm_run's training FLOPs nearest ref_run's."""
    ref_fpi, ref_per_epoch, ref_epochs = _flops_and_images(ref_run, where)
    fpi, per_epoch, _ = _flops_and_images(arm_run, where)
    ref_flops = ref_fpi * ref_per_epoch * ref_epochs
    exact = ref_flops / (fpi * per_epoch)
    return Match(arm, reference, point, ref_epochs, ref_flops, fpi, ref_fpi, per_epoch, exact,
                 max(1, round(exact)))
