import math

import numpy as np

from unmasked.train.schedules import lr_schedule, momentum_schedule


def test_lr_warmup_then_half_cosine():
    lr = lr_schedule(1.0, total_steps=110, warmup_steps=10, min_lr=0.1)
    assert lr[0] == 0.0
    assert math.isclose(lr[5], 0.5)
    assert math.isclose(lr[10], 1.0)  # end of warm-up = peak
    assert math.isclose(lr[60], 0.1 + 0.9 * 0.5)  # half-way through the cosine
    assert lr[-1] > 0.1 and math.isclose(lr[-1], 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 99 / 100)))
    assert np.all(np.diff(lr[10:]) <= 1e-12)


def test_lr_no_warmup():
    lr = lr_schedule(2.0, total_steps=4, warmup_steps=0)
    assert math.isclose(lr[0], 2.0)


def test_ema_momentum_cosine_to_one():
    m = momentum_schedule(0.996, total_steps=101)
    assert math.isclose(m[0], 0.996)
    assert math.isclose(m[50], 0.998)
    assert math.isclose(m[-1], 1.0)
    assert np.all(np.diff(m) >= 0)


def test_schedules_are_lazy_for_huge_runs():
    """A run of 10^15 steps must not allocate a schedule array (8 PB as float64)."""
    import tracemalloc

    from unmasked.train.schedules import cosine

    tracemalloc.start()
    lr = lr_schedule(1.0, total_steps=10**15, warmup_steps=10**12)
    m = momentum_schedule(0.996, total_steps=10**15)
    wd = cosine(0.04, 0.4, 10**15)
    values = (lr[0], lr[10**12], lr(-1), m[1], wd[10**15 - 1])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1_000_000
    assert values[0] == 0.0 and math.isclose(values[1], 1.0) and math.isclose(values[4], 0.4)
    assert len(lr) == 10**15


def test_schedule_index_outside_the_run_is_an_error():
    import pytest

    lr = lr_schedule(1.0, total_steps=5, warmup_steps=0)
    with pytest.raises(IndexError):
        lr[5]


def test_weight_decay_cosine_from_start_to_end():
    from unmasked.train.schedules import cosine

    wd = cosine(0.04, 0.4, 101)
    assert math.isclose(wd[0], 0.04) and math.isclose(wd[50], 0.22) and math.isclose(wd[100], 0.4)
    assert np.all(np.diff(wd[:]) >= 0)


def test_pretrain_with_a_billion_epochs_and_two_steps(fm_root, tmp_path):
    """--epochs 1000000000 --steps 2: the schedules span 8e9 steps and must cost nothing."""
    from unmasked.train.loop import pretrain

    from ..helpers import tiny_config

    cfg = tiny_config(tmp_path, objective="mae", epochs=10**9, steps=2, warmup_epochs=1.0, log_every=1)
    summary = pretrain(cfg, progress=False)
    assert summary["steps"] == 2 and summary["total_steps"] == 10**9 * 8 and not summary["completed"]
