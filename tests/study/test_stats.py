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
    # t = (2/3) / (s / sqrt(3)) = 4 on 2 degrees of freedom: p = 1 - 4 / sqrt(18) (closed form for df = 2)
    assert math.isclose(d["p"], 1 - 4 / math.sqrt(18), rel_tol=1e-9)
    assert stats.sentence("LUT", "MAE", "kNN20", d) == (
        "LUT − MAE kNN20: +0.67 points (95% interval -0.05 to +1.38, 3 seeds): not distinguishable: "
        "between -0.05 and +1.38 points; three seeds cannot tell")


def test_paired_difference_excluding_zero():
    d = stats.paired_difference({1: 10.0, 2: 10.0, 3: 10.0}, {1: 11.0, 2: 11.2, 3: 10.8})
    # diffs 1.0, 1.2, 0.8: mean 1.0, s = 0.2, half-width 4.3027 * 0.2 / sqrt(3)
    assert math.isclose(d["mean"], 1.0) and math.isclose(d["half_width"], 4.3027 * 0.2 / math.sqrt(3))
    assert d["verdict"] == "higher"
    assert stats.sentence("B", "A", "linear", d).endswith("3 seeds): B higher (the 95% interval excludes 0)")
    lower = stats.paired_difference({1: 11.0, 2: 11.2, 3: 10.8}, {1: 10.0, 2: 10.0, 3: 10.0})
    assert lower["verdict"] == "lower"


def test_single_or_no_shared_seed():
    d = stats.paired_difference({0: 1.0}, {0: 1.5})
    assert d["half_width"] is None and stats.sentence("B", "A", "m", d) == (
        "B − A m: +0.50 points (1 seed): one seed: no interval")
    assert stats.paired_difference({0: 1.0}, {1: 1.0}) is None


def test_t_p_values_against_closed_forms():
    # df = 1: p = 1 - 2 atan(t) / pi; df = 2: p = 1 - t / sqrt(2 + t^2)
    for t in (0.1, 1.0, 3.0, 12.7062):
        assert math.isclose(stats.t_two_sided_p(t, 1), 1 - 2 * math.atan(t) / math.pi, rel_tol=1e-9)
        assert math.isclose(stats.t_two_sided_p(t, 2), 1 - t / math.sqrt(2 + t * t), rel_tol=1e-9)
    for df in (1, 2, 4, 10, 30):  # the tabulated 0.975 quantile sits at p = 0.05
        assert abs(stats.t_two_sided_p(stats.t975(df), df) - 0.05) < 1e-4
    assert stats.t_two_sided_p(0.0, 3) == 1.0


def test_holm_by_hand():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> raised to 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert stats.holm([]) == []


def test_family_correction_turns_a_lone_excluding_interval_into_not_distinguishable():
    # one clear difference (t = 40, p tiny) and one marginal one (t = 5, p = 1 - 5 / sqrt(27) = 0.0377)
    clear = stats.paired_difference({0: 0.0, 1: 0.0, 2: 0.0}, {0: 10.0, 1: 10.5, 2: 9.5})
    s = math.sqrt(3) / 5  # diffs 1 - s, 1, 1 + s: mean 1, sample std s, t = 1 / (s / sqrt(3)) = 5
    marginal = stats.paired_difference({0: 0.0, 1: 0.0, 2: 0.0}, {0: 1.0 - s, 1: 1.0, 2: 1.0 + s})
    p_marginal = 1 - 5 / math.sqrt(27)
    assert math.isclose(marginal["p"], p_marginal, rel_tol=1e-9) and marginal["verdict"] == "higher"
    nulls = [stats.paired_difference({0: 0.0, 1: 0.0, 2: 0.0}, {0: 1.0, 1: -1.0, 2: 0.5}) for _ in range(2)]
    family = [clear, marginal, *nulls]
    assert stats.correct_family(family) == 4
    expected = stats.holm([d["p"] for d in family])
    assert [d["p_holm"] for d in family] == pytest.approx(expected)
    assert math.isclose(marginal["p_holm"], min(1.0, max(3 * p_marginal, clear["p"] * 4)), rel_tol=1e-9)
    assert clear["verdict"] == "higher" and marginal["verdict"] == "not distinguishable"
    assert marginal["verdict_unadjusted"] == "higher" and all(d["family"] == 4 for d in family)
    text = stats.sentence("B", "A", "kNN20", marginal)
    assert "not distinguishable after Holm over 4 (adjusted p = " in text and "excludes 0" in text
    assert "changes nothing" not in text
    null_text = stats.sentence("B", "A", "kNN20", nulls[0])
    low, high = nulls[0]["low"], nulls[0]["high"]
    assert null_text.endswith(f"not distinguishable after Holm over 4: between {low:+.2f} and {high:+.2f} "
                              "points; three seeds cannot tell")
