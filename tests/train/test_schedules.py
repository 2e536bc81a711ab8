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
