"""No collapse on a short CPU run (about 30 s): the teacher's outputs stay sharp and varied.

DINO collapses in two ways: every image gets the uniform distribution (per-image
entropy -> ln K, loss pinned at ln K), or every image gets the same peaked one (entropy of the
batch-mean output -> 0). Both carry no information about the image: mean-output entropy minus
per-image entropy (the mutual information between image and prototype) goes to 0. The
thresholds below are checked against both collapsed outputs, so a collapsed run fails them.
"""

import math

import pytest
import torch

from tests.objectives.dinov2_loop import HandLoop, one_thread, tiny_dinov2  # noqa: F401 (fixture)
from unmasked.data import fashion_mnist
from unmasked.objectives.dinov2 import entropy

K = 64
STEPS, BATCH = 150, 32


def collapse_failures(per_image_entropy: float, mean_entropy: float, loss_dino: float, k: int) -> list[str]:
    ln_k = math.log(k)
    out = []
    if per_image_entropy > ln_k - 0.5:
        out.append(f"per-image teacher entropy {per_image_entropy:.2f} near ln K {ln_k:.2f} (uniform)")
    if mean_entropy < math.log(8):
        out.append(f"mean-output entropy {mean_entropy:.2f} below ln 8 (one output for every image)")
    if mean_entropy - per_image_entropy < 0.25:
        out.append(f"outputs carry {mean_entropy - per_image_entropy:.2f} nats about the image")
    if loss_dino > ln_k - 0.2:
        out.append(f"DINO loss {loss_dino:.2f} pinned near ln K {ln_k:.2f}")
    return out


def _report(probs: torch.Tensor, loss: float):
    return entropy(probs).mean().item(), entropy(probs.mean(0)).item(), loss


def test_thresholds_reject_both_collapsed_outputs():
    uniform = torch.full((64, K), 1.0 / K)
    assert len(collapse_failures(*_report(uniform, math.log(K)), K)) >= 3
    constant = torch.softmax(torch.zeros(64, K).index_fill_(1, torch.tensor([3]), 20.0), dim=-1)
    assert len(collapse_failures(*_report(constant, 0.01), K)) >= 2


@pytest.mark.usefixtures("one_thread")
def test_short_cpu_run_does_not_collapse(fm_root):
    images = torch.from_numpy(fashion_mnist.load(fm_root)["train_images"][: STEPS * BATCH].copy())
    # DINO v1's constant teacher temperature 0.04 (its default; 0.07 is for long, stable runs) and a
    # fast EMA: 150 steps at 0.996 would leave the teacher at its initialisation
    obj = tiny_dinov2(k=K, dino_teacher_temp=0.04, dino_freeze_last_layer_epochs=0)
    loop = HandLoop(obj, STEPS, steps_per_epoch=STEPS, batch=BATCH, lr=1e-3, ema_start=0.99)
    history = []
    for s in range(STEPS):
        _, m = loop.step(s, images[s * BATCH:(s + 1) * BATCH])
        history.append(m)
    last = history[-15:]
    mean = {k: sum(h[k] for h in last) / len(last) for k in last[0]}
    failures = collapse_failures(mean["teacher_entropy"], mean["teacher_mean_entropy"], mean["loss_dino"], K)
    assert not failures, f"{failures}; last metrics {mean}"
    assert all(math.isfinite(h["loss_koleo"]) for h in history)
    assert history[-1]["loss_koleo"] < history[0]["loss_koleo"]  # the CLS features spread out

