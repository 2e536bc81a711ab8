"""A run's budget (images seen) and a rough time estimate for `unmasked study --dry-run`.

The estimate is anchored on measured times of the demo's CPU model (width 128, depth 6, 16
patches + CLS, 2 CPU cores): a 2-epoch run of Fashion-MNIST took ~2 min with MAE and ~6 min
with LUT, kNN evaluation ~20 s. Other models scale with width^2 x depth x tokens. It is an
order of magnitude for planning, not a promise; while a study runs, the measured pace of the
finished runs replaces it.
"""

from __future__ import annotations

from unmasked.config import DEFAULTS
from unmasked.data import image_folder
from unmasked.data.dataset import is_fashion_mnist
from unmasked.models.vit import PRESETS

FASHION_TRAIN, FASHION_TEST = 60_000, 10_000
# seconds per pretraining image of MAE on the anchor model on 2 CPU cores; other objectives scale it
# by their cost per training image relative to MAE's (measured on the CPU demo model)
MAE_S_PER_IMAGE = 120 / 120_000
STEP_COST = {
    "mae": 1.0,
    "lut": 3.0,  # two views and a teacher: ~6 min against MAE's ~2 for the CPU demo's 2 epochs
    "dinov2": 6.0,  # with the demo's 4 local crops about two LUT steps (more with the default 8)
}
UNKNOWN_STEP_COST = 3.0  # an objective not measured yet
FORWARD_S_PER_IMAGE = 20 / 70_000  # kNN: 70,000 images embedded once
ANCHOR_COST = 128**2 * 6 * 17
MONITOR_IMAGES = 6_000
EVAL_FIXED_S = {"knn": 5.0, "linear": 30.0, "analyze": 15.0, "finetune": 0.0}  # start-up, probe, figures


def _count_train_images(data: str) -> int | None:
    if is_fashion_mnist(data):
        return FASHION_TRAIN
    try:
        return len(image_folder.scan(data, unlabeled=False, val_fraction=0.1, seed=0).train.files)
    except Exception:  # noqa: BLE001 - only an estimate; the run itself reports a bad folder
        return None


def model_scale(o: dict, fashion: bool) -> float:
    width, depth, _ = PRESETS[o.get("model") or ("vit_tiny" if fashion else "vit_base")]
    width, depth = o.get("width") or width, o.get("depth") or depth
    img = o.get("img_size") or (28 if fashion else 224)
    patch = o.get("patch_size") or (4 if fashion else 16)
    tokens = (img // patch) ** 2 + 1
    return width**2 * depth * tokens / ANCHOR_COST


def run_budget(o: dict, evals: dict) -> dict:
    """{train_images, epochs, batch_size, steps, images_seen, pretrain_s, evals_s} (None where unknown)."""
    data = o.get("data", DEFAULTS["data"])
    fashion = is_fashion_mnist(data)
    n = _count_train_images(data)
    if n is not None and o.get("subset"):
        n = min(n, o["subset"])
    epochs = o.get("epochs") or (40 if fashion else 100)
    batch = o.get("batch_size") or 256
    out = {"train_images": n, "epochs": epochs, "batch_size": batch, "steps": None, "images_seen": None,
           "pretrain_s": None, "evals_s": None}
    if n is None:
        return out
    steps = epochs * (n // batch)
    if o.get("steps"):
        steps = min(steps, o["steps"])
    seen = steps * batch
    scale = model_scale(o, fashion)
    name = o.get("objective") or DEFAULTS["objective"]
    per_image = MAE_S_PER_IMAGE * STEP_COST.get(name, UNKNOWN_STEP_COST)
    checks = 0
    if o.get("knn_every"):
        checks = int(steps / max(1, round(o["knn_every"] * (n // batch)))) + 1
    embed_all = (n + (FASHION_TEST if fashion else n // 9)) * FORWARD_S_PER_IMAGE * scale
    evals_s = 0.0
    for proto in evals:
        evals_s += EVAL_FIXED_S[proto]
        if proto == "knn" or (proto == "linear" and "knn" not in evals):  # linear reuses kNN's cached features
            evals_s += embed_all
        if proto == "finetune":
            evals_s += 30 * n * 3 * FORWARD_S_PER_IMAGE * scale  # ~30 epochs of forward + backward
    out.update(steps=steps, images_seen=seen, evals_s=evals_s,
               pretrain_s=seen * per_image * scale + checks * MONITOR_IMAGES * FORWARD_S_PER_IMAGE * scale)
    return out
