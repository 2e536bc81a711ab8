"""A tiny MAE run folder on a small image folder (16 px, patch 4), pretrained for one step."""

from pathlib import Path

from tests.data.helpers import class_folder
from tests.helpers import tiny_config
from unmasked.train.loop import pretrain


def tiny_run(root: Path, objective: str = "mae", channels: int | None = None, **options) -> tuple[Path, Path]:
    """(run folder, its labeled image folder: classes cat/dog, 6 images each of 40 x 30 px);
    `options`: more pretrain options."""
    data = class_folder(root / "imgs", per_class=6, size=(40, 30))
    extra = {**options, **({} if channels is None else {"channels": channels})}
    pretrain(tiny_config(root, objective=objective, data=str(data), img_size=16, patch_size=4, subset=None,
                         batch_size=8, steps=1, **extra), progress=False)
    return root / "run", data
