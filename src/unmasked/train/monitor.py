"""The kNN monitor (`--knn-every`): is pretraining still improving the features?

Every N epochs the student's encoder embeds a fixed bank of training images and a fixed set of
held-out queries (eval mode, no augmentation, no gradient) and the weighted 20-NN top-1 of CLS
and mean-pooled features is logged to metrics.jsonl, beside the same kNN on the raw pixels of the
same bank and queries (`knn20_pixels`, computed once): the line a curve has to cross, on its own
subset rather than the full evaluation's. The monitor is an observer: it restores
every module's train/eval mode and every RNG state it could touch (a DataLoader draws its seed
from the global generator), so a run's weights are the same with and without it.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from unmasked.data.dataset import Split
from unmasked.errors import UserError
from unmasked.eval.features import extract_features
from unmasked.eval.knn import knn_accuracy
from unmasked.eval.pixels import pixel_rows
from unmasked.eval.view import EvalView, eval_view_for
from unmasked.train import checkpoint as ckpt

BANK_IMAGES = 5000
QUERY_IMAGES = 1000
K = 20
SUBSET_SEED = 0  # the same images for every run and seed, so curves are comparable
MAX_PIXEL_VALUES = 3 * 64 * 64  # the raw-pixel line for images up to 64 px RGB (Fashion-MNIST: 784 values)


def fixed_subset(split: Split, n: int) -> Split:
    idx = np.sort(np.random.default_rng(SUBSET_SEED).permutation(len(split))[: min(n, len(split))])
    return split.subset(idx)


class KnnMonitor:
    def __init__(self, objective, data, mean, std, crop_pct: float, device: torch.device, interval: int,
                 last_step: int, steps_per_epoch: int, write, batch_size: int = 256, img_size: int | None = None):
        self.objective, self.mean, self.std, self.crop_pct = objective, mean, std, crop_pct
        self.img_size = img_size or data.base_size
        self.device, self.interval, self.last_step = device, interval, last_step
        self.steps_per_epoch, self.write, self.batch_size = steps_per_epoch, write, batch_size
        self.base, self.channels, self.classes = data.base_size, data.channels, len(data.classes)
        self.bank = fixed_subset(data.train, BANK_IMAGES)
        self.queries = fixed_subset(data.heldout, QUERY_IMAGES)
        self.observers: list = []
        self.pixels: float | bool | None = None  # the same kNN on raw pixels, once (False: images too large)

    def due(self, step: int) -> bool:
        return step % self.interval == 0 or step == self.last_step

    def after_step(self, step: int) -> float:
        """Evaluate when due; returns the seconds spent (0 when not due)."""
        if not self.due(step):
            return 0.0
        t0 = time.perf_counter()
        record = {"step": step, "epoch": round(step / self.steps_per_epoch, 4)}
        record.update(self.evaluate())
        spent = time.perf_counter() - t0
        record["knn_time_s"] = round(spent, 2)
        for observe in self.observers:  # e.g. the collapse watch, which may add to the record
            observe(record)
        self.write(record)
        return spent

    def evaluate(self) -> dict[str, float]:
        modes = [(m, m.training) for m in self.objective.modules()]
        rng = ckpt.rng_state()
        try:
            feats = [self._features(s) for s in (self.bank, self.queries)]
            if self.pixels is None:  # inside: reading a folder's images draws a DataLoader seed
                self.pixels = self._pixel_knn()
        finally:
            for m, training in modes:  # the student back to train mode, a teacher stays in eval mode
                m.train(training)
            ckpt.set_rng_state(rng)
        (bank, bank_labels), (queries, query_labels) = feats
        out = {}
        for kind in ("cls", "mean"):
            acc = knn_accuracy(bank[kind], bank_labels, queries[kind], query_labels, self.classes, ks=(K,))
            out[f"knn{K}_{kind}"] = acc[K]["top1"]
        if self.pixels is not False:
            out[f"knn{K}_pixels"] = self.pixels
        return out

    def _pixel_knn(self) -> float | bool:
        """kNN20 on the raw pixels of the monitor's bank and queries, in the view its features see;
        False where an image has over MAX_PIXEL_VALUES values (5,000 224-px RGB images would hold 3 GB
        mid-training; `eval knn` still gives the pixels of the whole split)."""
        if self.channels * self.img_size ** 2 > MAX_PIXEL_VALUES:
            return False
        view = EvalView(self.img_size, self.base, self.crop_pct)
        (bx, by), (qx, qy) = (pixel_rows(s, view, self.channels) for s in (self.bank, self.queries))
        acc = knn_accuracy(bx.float().div_(255), by, qx.float().div_(255), qy, self.classes, ks=(K,))
        return acc[K]["top1"]

    def _features(self, split: Split):
        # the network that is exported and evaluated (DINOv2: the EMA teacher's backbone)
        f = extract_features(self.objective.export_encoder(), split, self.mean, self.std, self.crop_pct, self.device,
                             batch_size=self.batch_size, base=self.base, channels=self.channels, progress=False)
        return f, split.labels[f["index"]]


def knn_monitor(trainer) -> KnnMonitor | None:
    """The monitor a Pretrainer asks for with --knn-every (main process only), or None."""
    cfg = trainer.cfg
    if cfg.knn_every is None or not trainer.env.is_main:
        return None
    if not cfg.knn_every > 0:
        raise UserError(f"--knn-every {cfg.knn_every}: must be a positive number of epochs (e.g. 0.5 or 1)")
    data = trainer.data
    if not data.labeled:
        raise UserError(f"--knn-every {cfg.knn_every}: the kNN monitor needs labels and a held-out split, but "
                        f"{cfg.data} has none; drop --knn-every or use a labeled folder")
    interval = max(1, round(cfg.knn_every * trainer.steps_per_epoch))

    def write(record: dict) -> None:
        with trainer._writing(trainer.metrics.path):
            trainer.metrics.write(record)

    # the evaluation view of `eval knn` where the training images were decoded at its size (always on
    # small data); otherwise the training decode, centre-cropped as the training crop suggests
    view = eval_view_for(cfg.data, cfg.img_size)
    crop_pct = view.crop_pct if view.base_size == data.base_size else cfg.crop_pct
    return KnnMonitor(trainer.objective, data, cfg.mean, cfg.std, crop_pct, trainer.device, interval,
                      trainer.total_steps, trainer.steps_per_epoch, write, img_size=cfg.img_size)
