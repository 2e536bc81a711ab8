"""Statistics over seeds: mean, sample std, paired differences with a t-based 95% interval, and
Holm's correction over a study's family of differences.

Seeds are few (2-5), so intervals use Student's t with n - 1 degrees of freedom, not the normal
approximation (which would be too narrow: 1.96 against 4.30 at 3 seeds). No scipy: the 0.975
quantiles for df 1..30 are tabulated; above 30 a Cornish-Fisher expansion around the normal
quantile is within 1e-4 of the exact value. Two-sided p-values come from the regularised
incomplete beta function (Lentz's continued fraction), exact to about 1e-12.

A study compares several pairs of arms on several metrics; 42 separate 95% intervals would give
about two false "higher" / "lower" words where nothing differs. The verdict words are therefore
decided by Holm's step-down correction over the whole family (family-wise error 5%), while each
sentence still shows the unadjusted 95% interval.
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


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: int) -> float:
    """P(|T| >= |t|) for Student's t with df degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order: the i-th smallest p times (m - i + 1),
    made non-decreasing along the sorted order, capped at 1."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


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
        s = sample_std(diffs)
        hw = t975(n - 1) * s / math.sqrt(n)
        out.update(half_width=hw, low=m - hw, high=m + hw)
        out["verdict"] = "not distinguishable" if m - hw <= 0 <= m + hw else (
            "higher" if m > 0 else "lower")
        if s > 0:
            out["p"] = t_two_sided_p(m / (s / math.sqrt(n)), n - 1)
        else:  # every seed moved by the same amount: exactly 0 (no evidence) or no spread at all
            out["p"] = 1.0 if m == 0 else 0.0
    return out


def correct_family(diffs: list[dict], alpha: float = 0.05) -> int:
    """Holm over every difference that has an interval: sets "p_holm", "family" and the corrected
    "verdict" (the unadjusted one stays as "verdict_unadjusted"); returns the family size."""
    tested = [d for d in diffs if d.get("p") is not None]
    for d, p_adj in zip(tested, holm([d["p"] for d in tested])):
        d["verdict_unadjusted"] = d["verdict"]
        d["p_holm"], d["family"] = p_adj, len(tested)
        d["verdict"] = ("higher" if d["mean"] > 0 else "lower") if p_adj < alpha else "not distinguishable"
    return len(tested)


def _num(x: float) -> str:
    return f"{x:+.2f}" if x != 0 else "0.00"


def sentence(name_b: str, name_a: str, metric: str, diff: dict, unit: str = "points") -> str:
    """'lut − mae kNN20: +0.67 (95% interval -0.05 to +1.38 points, 3 seeds): not distinguishable
    after Holm over 12: the interval allows between -0.05 and +1.38 points; three seeds cannot tell'

    The verdict is the Holm-corrected one when the difference belongs to a family (correct_family),
    the interval is the unadjusted 95% one."""
    seeds = f"{diff['n']} seed{'s' if diff['n'] != 1 else ''}"
    u = f" {unit}" if unit else ""
    if diff["half_width"] is None:
        return f"{name_b} − {name_a} {metric}: {diff['mean']:+.2f}{u} ({seeds}): {diff['verdict']}"
    head = (f"{name_b} − {name_a} {metric}: {diff['mean']:+.2f}{u} (95% interval {_num(diff['low'])} to "
            f"{_num(diff['high'])}, {seeds})")
    family = f" after Holm over {diff['family']}" if diff.get("family") else ""
    verdict = diff["verdict"]
    if verdict == "not distinguishable" and diff.get("verdict_unadjusted", verdict) != verdict:
        return (f"{head}: not distinguishable{family} (adjusted p = {diff['p_holm']:.3g}; the unadjusted "
                f"interval excludes 0, as about 1 in 20 such intervals does by chance)")
    if verdict == "not distinguishable":
        words = {2: "two", 3: "three", 4: "four", 5: "five"}.get(diff["n"], str(diff["n"]))
        return (f"{head}: not distinguishable{family}: between {_num(diff['low'])} and "
                f"{_num(diff['high'])}{u}; {words} seeds cannot tell")
    why = (f"adjusted p = {diff['p_holm']:.3g}" if diff.get("family") else "the 95% interval excludes 0")
    return f"{head}: {name_b} {verdict}{family} ({why})"
