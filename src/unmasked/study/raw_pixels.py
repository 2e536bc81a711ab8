"""The raw-pixel row of a study report: the same kNN and linear probe on the images themselves.

The row is read from the "pixels" entry that `unmasked eval knn` and `eval linear` write into
each run's result file: the same function (eval/pixels.py), the same evaluation view of the
dataset (eval/view.py, not any run's training crop), the same k, T and probe recipe. When a
study runs no kNN evaluation, `raw_pixel_knn` computes the kNN row through that same function.
"""

from __future__ import annotations

from unmasked.data.dataset import load_data
from unmasked.eval.knn import KS, TEMPERATURE, pixel_knn
from unmasked.eval.view import eval_view_for

FILE = "raw_pixels.json"


def raw_pixel_knn(config: dict) -> dict:
    """kNN top-1 of raw pixels on the evaluation view of a run's data and input size."""
    data = config["data"]
    view = eval_view_for(data, config["img_size"])
    ds = load_data(data, base_size=view.base_size, channels=config["in_chans"], progress=False)
    if not ds.labeled:
        return {"data": data, "note": "unlabeled data: no raw-pixel kNN"}
    res = pixel_knn(ds, view, KS, TEMPERATURE)
    return {"data": ds.name, "img_size": config["img_size"], "view": view.describe(), "train_images": len(ds.train),
            "test_images": len(ds.heldout), "temperature": TEMPERATURE, "input": res["input"],
            "top1": {k: v["top1"] for k, v in res["results"].items()}}


def is_current(raw: dict | None) -> bool:
    """Files written before the row used the evaluation view carry no "view": recomputed, never shown."""
    return bool(raw) and "view" in raw
