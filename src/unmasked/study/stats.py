"""Statistics over seeds: mean, sample std, and paired differences with a t-based 95% interval.

Seeds are few (2-5), so intervals use Student's t with n - 1 degrees of freedom, not the normal
approximation (which would be too narrow: 1.96 against 4.30 at 3 seeds). No scipy: the 0.975
quantiles for df 1..30 are tabulated; above 30 a Cornish-Fisher expansion around the normal
quantile is within 1e-4 of the exact value.
"""

from __future__ import annotations

import math

# Student's t, 0.975 quantile (two-sided 95%), df = 1..30
T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
        2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
        2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)
Z975 = 1.959964


def t975(df: int) -> float:
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(T975):
        return T975[df - 1]
    z = Z975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def sample_std(values: list[float]) -> float | None:
    """Standard deviation with n - 1 in the denominator; None for a single value."""
    n = len(values)
    if n < 2:
        return None
    m = mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))


def summarize(values: list[float]) -> dict:
    return {"n": len(values), "mean": mean(values), "std": sample_std(values), "values": list(values)}


def paired_difference(a: dict, b: dict) -> dict | None:
    """b - a over the seeds both have ({seed: value} each): mean, 95% half-width, interval, verdict.

    The interval is mean +- t975(n - 1) * s / sqrt(n), s the sample std of the differences; the
    difference is "not distinguishable" when the interval covers 0. None when no seed is shared.
    """
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    diffs = [b[s] - a[s] for s in seeds]
    m, n = mean(diffs), len(diffs)
    out = {"seeds": seeds, "n": n, "diffs": diffs, "mean": m, "half_width": None, "low": None, "high": None,
           "verdict": "one seed: no interval"}
    if n >= 2:
        hw = t975(n - 1) * sample_std(diffs) / math.sqrt(n)
        out.update(half_width=hw, low=m - hw, high=m + hw)
        out["verdict"] = "not distinguishable" if m - hw <= 0 <= m + hw else (
            "higher" if m > 0 else "lower")
    return out


def sentence(name_b: str, name_a: str, metric: str, diff: dict, unit: str = "points") -> str:
    """'LUT − MAE kNN20: +0.4 ± 0.6 points (3 seeds): not distinguishable'"""
    seeds = f"{diff['n']} seed{'s' if diff['n'] != 1 else ''}"
    if diff["half_width"] is None:
        return f"{name_b} − {name_a} {metric}: {diff['mean']:+.2f} {unit} ({seeds}): {diff['verdict']}"
    verdict = diff["verdict"]
    if verdict != "not distinguishable":
        verdict = f"{name_b} {verdict} (the 95% interval excludes 0)"
    return f"{name_b} − {name_a} {metric}: {diff['mean']:+.2f} ± {diff['half_width']:.2f} {unit} ({seeds}): {verdict}"
