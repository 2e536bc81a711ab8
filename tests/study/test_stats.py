"""Statistics over seeds against values computed by hand."""

import math

import pytest

from unmasked.study import stats


def test_mean_and_sample_std():
    xs = [2, 4, 4, 4, 5, 5, 7, 9]  # squared deviations sum to 32; n - 1 = 7
    assert stats.mean(xs) == 5
    assert math.isclose(stats.sample_std(xs), math.sqrt(32 / 7))
    assert stats.sample_std([3.0]) is None


def test_t_quantiles():
    assert stats.t975(1) == 12.7062 and stats.t975(2) == 4.3027 and stats.t975(30) == 2.0423
    assert abs(stats.t975(60) - 2.0003) < 2e-4 and abs(stats.t975(1000) - 1.9623) < 2e-4
    with pytest.raises(ValueError):
        stats.t975(0)


def test_paired_difference_covering_zero():
    a = {0: 80.0, 1: 81.0, 2: 82.0}
    b = {0: 80.5, 1: 82.0, 2: 82.5, 7: 99.0}  # seed 7 has no partner: left out
    d = stats.paired_difference(a, b)
    # diffs 0.5, 1.0, 0.5: mean 2/3, s = sqrt(1/12), half-width 4.3027 * s / sqrt(3) = 4.3027 / 6
    assert d["seeds"] == [0, 1, 2] and d["n"] == 3
    assert math.isclose(d["mean"], 2 / 3)
    assert math.isclose(d["half_width"], 4.3027 / 6)
    assert d["low"] < 0 < d["high"] and d["verdict"] == "not distinguishable"
    assert stats.sentence("LUT", "MAE", "kNN20", d) == \
        "LUT − MAE kNN20: +0.67 ± 0.72 points (3 seeds): not distinguishable"


def test_paired_difference_excluding_zero():
    d = stats.paired_difference({1: 10.0, 2: 10.0, 3: 10.0}, {1: 11.0, 2: 11.2, 3: 10.8})
    # diffs 1.0, 1.2, 0.8: mean 1.0, s = 0.2, half-width 4.3027 * 0.2 / sqrt(3)
    assert math.isclose(d["mean"], 1.0) and math.isclose(d["half_width"], 4.3027 * 0.2 / math.sqrt(3))
    assert d["verdict"] == "higher"
    assert stats.sentence("B", "A", "linear", d).endswith("(3 seeds): B higher (the 95% interval excludes 0)")
    lower = stats.paired_difference({1: 11.0, 2: 11.2, 3: 10.8}, {1: 10.0, 2: 10.0, 3: 10.0})
    assert lower["verdict"] == "lower"


def test_single_or_no_shared_seed():
    d = stats.paired_difference({0: 1.0}, {0: 1.5})
    assert d["half_width"] is None and stats.sentence("B", "A", "m", d) == "B − A m: +0.50 points (1 seed): one seed: no interval"
    assert stats.paired_difference({0: 1.0}, {1: 1.0}) is None
