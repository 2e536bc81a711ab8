"""Each DINOv2 loss on hand-made tensors against its formula, written out the long way."""

import math

import pytest
import torch

from unmasked.objectives.dino.losses import (
    cross_entropy_rows,
    dino_loss,
    ibot_loss,
    koleo_loss,
    masked_token_weights,
)
from unmasked.objectives.dino.targets import Centering


def _ce(s_row, t_row, temp):
    """-sum_k t_k log softmax(s / T)_k for one row, from exp and log."""
    z = [v / temp for v in s_row]
    log_norm = math.log(sum(math.exp(v) for v in z))
    return -sum(t * (v - log_norm) for t, v in zip(t_row, z))


def test_cross_entropy_rows_matches_the_formula():
    s = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]])
    t = torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.0, 0.5]])
    got = cross_entropy_rows(s, t, 0.1)
    for i in range(2):
        assert got[i].item() == pytest.approx(_ce(s[i].tolist(), t[i].tolist(), 0.1), rel=1e-5)


def test_dino_loss_with_centred_sharpened_teacher_matches_pairs_written_out():
    """Student crop i against the teacher's other global crop; locals against both; / (2 + 2N)."""
    torch.manual_seed(0)
    b, k, n_local, ts, tt = 3, 5, 2, 0.1, 0.04
    s_global, s_local = torch.randn(2 * b, k), torch.randn(n_local * b, k)
    t_logits = torch.randn(2 * b, k)
    centre = Centering(k)
    centre.center.copy_(torch.randn(1, k))
    probs = centre.softmax(t_logits, tt)
    # the teacher target by hand: exp((t - c) / T) / sum
    c = centre.center[0].tolist()
    by_hand = []
    for row in t_logits.tolist():
        e = [math.exp((v - ci) / tt) for v, ci in zip(row, c)]
        by_hand.append([x / sum(e) for x in e])
    assert torch.allclose(probs, torch.tensor(by_hand), atol=1e-6)

    teacher = [by_hand[:b], by_hand[b:]]  # crop 1, crop 2
    students = [s_global[:b].tolist(), s_global[b:].tolist()] + [s_local[v * b:(v + 1) * b].tolist()
                                                                 for v in range(n_local)]
    total, pairs = 0.0, 0
    for si, crop in enumerate(students):
        for ti in range(2):
            if si == ti:  # a global crop is never compared with itself
                continue
            total += sum(_ce(crop[j], teacher[ti][j], ts) for j in range(b)) / b
            pairs += 1
    assert pairs == 2 + 2 * n_local
    got = dino_loss(s_global, s_local, probs, ts)
    assert got.item() == pytest.approx(total / pairs, rel=1e-5)
    # without local crops only the two cross pairs remain
    two = sum(_ce(students[si][j], teacher[1 - si][j], ts) for si in range(2) for j in range(b)) / b / 2
    assert dino_loss(s_global, None, probs, ts).item() == pytest.approx(two, rel=1e-5)


def test_dino_loss_of_a_uniform_teacher_is_ln_k_for_a_uniform_student():
    """The collapse signature: a uniform output pins the loss at ln K."""
    k = 16
    probs = torch.full((4, k), 1.0 / k)
    assert dino_loss(torch.zeros(4, k), torch.zeros(4, k), probs, 0.1).item() == pytest.approx(math.log(k))


def test_ibot_weights_each_token_by_its_images_masked_count():
    """Unequal masks: image 0 has 1 masked token, image 1 has 3, image 2 none (still counted)."""
    masks = torch.tensor([[False, True, False, False],
                          [True, True, False, True],
                          [False, False, False, False]])
    assert masked_token_weights(masks).tolist() == pytest.approx([1.0, 1 / 3, 1 / 3, 1 / 3])
    torch.manual_seed(1)
    s, t = torch.randn(4, 6), torch.softmax(torch.randn(4, 6), dim=-1)
    ce = [_ce(s[i].tolist(), t[i].tolist(), 0.1) for i in range(4)]
    expected = (ce[0] / 1 + (ce[1] + ce[2] + ce[3]) / 3) / 3  # per-image means, summed, / 3 images
    assert ibot_loss(s, t, masks, 0.1).item() == pytest.approx(expected, rel=1e-5)
    # a plain mean over tokens would weight image 1 three times as much: not what iBOT does
    assert ibot_loss(s, t, masks, 0.1).item() != pytest.approx(sum(ce) / 4, rel=1e-3)


def test_ibot_without_masked_tokens_is_zero():
    masks = torch.zeros(2, 4, dtype=torch.bool)
    assert ibot_loss(torch.zeros(0, 3), torch.zeros(0, 3), masks, 0.1).item() == 0.0


def test_koleo_matches_brute_force_nearest_neighbour():
    torch.manual_seed(2)
    x = torch.randn(7, 5)
    xs = [[v / math.sqrt(sum(u * u for u in row)) for v in row] for row in x.tolist()]
    total = 0.0
    for i, a in enumerate(xs):
        # nearest other point by euclidean distance (= largest dot product on the unit sphere)
        d = min(math.dist(a, b) for j, b in enumerate(xs) if j != i)
        total += -math.log(d + 1e-8)
    assert koleo_loss(x).item() == pytest.approx(total / len(xs), rel=1e-4)


def test_koleo_runs_in_fp32_under_autocast_and_gives_gradients():
    x = torch.randn(6, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = koleo_loss(x.bfloat16())
    assert loss.dtype == torch.float32
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert koleo_loss(torch.randn(1, 8)).item() == 0.0  # no neighbour in a batch of one
