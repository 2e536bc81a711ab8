"""A tiny study on a generated image folder: every run and evaluation takes a second or two."""

from pathlib import Path

from ..data.helpers import class_folder

TINY_RECIPE = """
[recipe]
data = "{data}"
img_size = 16
patch_size = 4
width = 32
depth = 2
heads = 2
decoder_width = 32
decoder_depth = 1
decoder_heads = 2
proj_hidden = 64
crop = "pad"
batch_size = 4
epochs = 3
warmup_epochs = 0.5
num_workers = 0
device = "cpu"
log_every = 1
save_every_steps = 1
knn_every = 1
{extra}
"""


def tiny_study(tmp: Path, name: str = "tiny", extra: str = "", arms: str | None = None,
               evals: str = "knn = true", seeds: str = "[0, 1]") -> Path:
    data = tmp / "images"
    if not data.exists():
        class_folder(data, classes=("a", "b", "c"), per_class=12, size=(20, 20))
    arms = arms or '[arms.mae]\nobjective = "mae"\n[arms.lut]\nobjective = "lut"\n'
    text = (f'name = "{name}"\nout = "{tmp / name}"\nseeds = {seeds}\n' + TINY_RECIPE.format(data=data, extra=extra)
            + arms + f"[evals]\n{evals}\n")
    path = tmp / f"{name}.toml"
    path.write_text(text)
    return path
