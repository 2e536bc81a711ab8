"""Seconds per optimiser step of the proposed DINOv2 CPU demo preset beside the LUT demo preset.

Both on the demo model (128 wide x 6 deep, patch 7 on 28 px Fashion-MNIST, batch 256), with a
hand-written step (forward, backward, AdamW, EMA), so the ratio sizes the DINOv2 demo to the LUT
demo's time budget. Run from the repository root:

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/dinov2_demo_step_time.py --threads 2 --steps 10
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

sys.path.insert(0, "tests/objectives")  # the hand-written DINOv2 loop the tests use

from dinov2_loop import HandLoop  # noqa: E402

from unmasked.data import fashion_mnist  # noqa: E402
from unmasked.data.augment import AugmentSpec, BatchAugment  # noqa: E402
from unmasked.models import MAEDecoder, build_encoder, encoder_spec  # noqa: E402
from unmasked.objectives import LUT  # noqa: E402
from unmasked.objectives.dino.options import DINOv2Options, resolve_options  # noqa: E402
from unmasked.objectives.dinov2 import DINOv2  # noqa: E402
from unmasked.rng import BatchRandom  # noqa: E402

BATCH = 256


def demo_encoder():
    torch.manual_seed(0)
    return build_encoder(encoder_spec("vit_tiny", 28, 7, 1, embed_dim=128, depth=6, num_heads=4))


def lut_step_fn(images):
    obj = LUT(demo_encoder(), MAEDecoder(4, 128, 128, 2, 4, 49), fuse_views=False).train()
    opt = torch.optim.AdamW(obj.student.parameters(), lr=6e-4, betas=(0.9, 0.95))
    spec = AugmentSpec(img_size=28, mean=(0.286,), std=(0.353,), crop="pad", pad=4)
    augs = [BatchAugment(s) for s in obj.view_specs(spec)]

    def step(s):
        rng = BatchRandom(0, s, 0, BATCH)
        x = images[s * BATCH:(s + 1) * BATCH]
        loss, _ = obj([a(x, rng) for a in augs], rng)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        obj.update_teacher(0.996)
    return step


def dinov2_step_fn(images, local_crops, hidden, k):
    o = DINOv2Options(dino_heads_k=k, dino_head_hidden=hidden, dino_head_bottleneck=128, dino_local_crops=local_crops)
    obj = DINOv2(demo_encoder(), resolve_options(o, 28, 7, epochs=1, small=True))
    loop = HandLoop(obj, total_steps=1000, steps_per_epoch=234, batch=BATCH, lr=5e-4)
    return lambda s: loop.step(s, images[s * BATCH:(s + 1) * BATCH])


def timed(step, steps) -> float:
    step(0)  # warm-up step, not timed
    t = time.perf_counter()
    for s in range(1, steps + 1):
        step(s)
    return (time.perf_counter() - t) / steps


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--local-crops", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--k", type=int, default=1024)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    images = torch.from_numpy(fashion_mnist.load()["train_images"][: BATCH * (args.steps + 1)].copy())
    lut = timed(lut_step_fn(images), args.steps)
    print(f"lut demo preset: {lut:.2f} s/step (468 steps = 2 epochs: {468 * lut / 60:.1f} min)")
    for n in args.local_crops:
        t = timed(dinov2_step_fn(images, n, args.hidden, args.k), args.steps)
        print(f"dinov2, {n} local crops of 14 px, head {args.hidden}/128/K {args.k}: {t:.2f} s/step = "
              f"{t / lut:.2f}x LUT; 234 steps (1 epoch): {234 * t / 60:.1f} min")


if __name__ == "__main__":
    main()
