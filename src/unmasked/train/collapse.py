"""The collapse watch: name a representation collapse while pretraining, when it happens.

Signals, each judged over `PATIENCE` consecutive logged steps:

- DINOv2's teacher: the entropy of its batch-mean target pinned near 0 (every image sent to one
  prototype), or its per-image entropy pinned near ln K (uniform targets that teach nothing);
- every objective: the spread of the exported encoder's L2-normalised mean-pooled embeddings of a
  fixed set of training images (lightly's collapse metric, the std over images times sqrt(D):
  about 1 for embeddings spread over the sphere, 0 when every image gets the same embedding);
- with `--knn-every`: the kNN monitor's top-1 at chance (1 / classes) at two checks running.

A collapse prints one line naming the signal and the options that usually help, and is logged
in metrics.jsonl (`collapse`); with `--on-collapse stop` the run stops there, its checkpoint kept.
The probe is an observer: eval mode, no gradient, every module's mode and RNG state restored.
"""

from __future__ import annotations

import math
import sys

import torch
import torch.nn.functional as F

from unmasked.data.augment import eval_view
from unmasked.eval.features import iterate_split
from unmasked.models.vit import pooled_features
from unmasked.train import checkpoint as ckpt
from unmasked.train.monitor import fixed_subset

PATIENCE = 3  # logged steps in a row
PROBE_IMAGES = 256
UNIFORM_SHARE = 0.97  # per-image teacher entropy >= this share of ln K: uniform targets
ONE_PROTOTYPE_SHARE = 0.05  # batch-mean teacher entropy <= this share of ln K: one prototype
MIN_SPREAD = 0.02  # sqrt(D) * std of the L2-normalised embeddings below this: one embedding
CHANCE_MARGIN = 1.2  # kNN top-1 within 20% of chance

ADVICE = {
    "teacher_uniform": "a lower --dino-teacher-temp (0.04-0.07), a longer --dino-teacher-temp-warmup-epochs, "
                       "a lower --lr / --base-lr",
    "teacher_one_prototype": "--dino-centering sinkhorn, a larger --koleo-weight, a lower --lr / --base-lr, "
                             "a higher --ema-momentum",
    "embedding_spread": "a lower --lr / --base-lr, a longer --warmup-epochs, --clip-grad 3.0, a higher "
                        "--ema-momentum for objectives with a teacher",
    "knn_chance": "a lower --lr / --base-lr, a longer --warmup-epochs, --clip-grad 3.0",
}


def embedding_spread(z: torch.Tensor) -> float:
    """sqrt(D) x the mean over dimensions of the std over images of the L2-normalised rows."""
    z = F.normalize(z.float(), dim=1)
    return float(z.std(dim=0).mean() * math.sqrt(z.shape[1]))


class CollapseWatch:
    def __init__(self, trainer, on_collapse: str = "warn"):
        cfg, data = trainer.cfg, trainer.data
        self.objective, self.device, self.on_collapse = trainer.objective, trainer.device, on_collapse
        self.mean, self.std, self.crop_pct = cfg.mean, cfg.std, cfg.crop_pct
        self.base, self.channels = data.base_size, data.channels
        self.probe, self.images = fixed_subset(data.train, PROBE_IMAGES), None
        k = cfg.option("dino_heads_k") if cfg.has_option("dino_heads_k") else None
        self.ln_k = math.log(k) if k and k > 1 else None
        self.chance = 100.0 / len(data.classes) if getattr(data, "labeled", False) and data.classes else None
        self.streak: dict[str, int] = {}
        self.named: str | None = None  # the first signal named (once per run)
        self.stop = False

    def check(self, rec: dict) -> str | None:
        """Add `embedding_spread` to a log record, judge the signals; the collapse line or None."""
        rec["embedding_spread"] = round(self.measure(), 4)
        signals = {"embedding_spread": rec["embedding_spread"] < MIN_SPREAD}
        if self.ln_k is not None and "teacher_entropy" in rec:
            signals["teacher_uniform"] = rec["teacher_entropy"] >= UNIFORM_SHARE * self.ln_k
            signals["teacher_one_prototype"] = rec["teacher_mean_entropy"] <= ONE_PROTOTYPE_SHARE * self.ln_k
        return self._judge(signals, rec, PATIENCE)

    def check_knn(self, rec: dict) -> str | None:
        """The kNN monitor's record: top-1 (CLS and mean-pooled) at chance at two checks running."""
        if self.chance is None or "knn20_cls" not in rec:
            return None
        at_chance = max(rec["knn20_cls"], rec["knn20_mean"]) <= CHANCE_MARGIN * self.chance
        return self._judge({"knn_chance": at_chance}, rec, 2)

    def _judge(self, signals: dict[str, bool], rec: dict, patience: int) -> str | None:
        for name, hit in signals.items():
            self.streak[name] = self.streak.get(name, 0) + 1 if hit else 0
        fired = [n for n, s in self.streak.items() if n in signals and s >= patience]
        if not fired:
            return None
        name = fired[0]
        rec["collapse"] = name
        if self.named is not None:
            return None  # said once; the record still carries it
        self.named, self.stop = name, self.on_collapse == "stop"
        line = f"collapse at step {rec['step']}: {self._describe(name, rec, patience)}; usually helps: {ADVICE[name]}"
        print(f"unmasked: {line}" + (" (--on-collapse stop: stopping)" if self.stop else ""), file=sys.stderr)
        return line

    def _describe(self, name: str, rec: dict, patience: int) -> str:
        if name == "teacher_uniform":
            return (f"the DINOv2 teacher's targets are uniform (entropy {rec['teacher_entropy']:.3f}, ln K = "
                    f"{self.ln_k:.3f}) for {patience} logged steps")
        if name == "teacher_one_prototype":
            return (f"the DINOv2 teacher sends every image to one prototype (entropy of its mean target "
                    f"{rec['teacher_mean_entropy']:.3f}, ln K = {self.ln_k:.3f}) for {patience} logged steps")
        if name == "knn_chance":
            return (f"the kNN monitor is at chance (top-1 {max(rec['knn20_cls'], rec['knn20_mean']):.1f}%, chance "
                    f"{self.chance:.1f}%) at {patience} checks running")
        return (f"every image gets nearly the same embedding (spread of the L2-normalised embeddings "
                f"{rec['embedding_spread']:.4f}, about 1 when spread out) for {patience} logged steps")

    @torch.no_grad()
    def measure(self) -> float:
        if self.images is None:  # decoded once: a streamed folder is not read again at every log
            self.images = torch.cat([b for b, _ in iterate_split(self.probe, PROBE_IMAGES, self.base, self.channels)])
        encoder = self.objective.export_encoder()
        modes = [(m, m.training) for m in self.objective.modules()]
        rng = ckpt.rng_state()
        try:
            encoder.eval()
            pooled = []
            for chunk in self.images.split(64):  # small batches: little memory beside the run's
                x = eval_view(chunk.to(self.device), encoder.spec.img_size, self.mean, self.std, self.crop_pct)
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
                    pooled.append(pooled_features(encoder.forward_features(x).float())["mean"])
        finally:
            for m, training in modes:
                m.train(training)
            ckpt.set_rng_state(rng)
        return embedding_spread(torch.cat(pooled))


__all__ = ["CollapseWatch", "embedding_spread"]
