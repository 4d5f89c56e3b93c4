"""Statistics for honest comparisons: CIs over seeds, paired McNemar tests, paired bootstrap CIs."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats as st

ALPHA = 0.05


def mean_ci(values: list[float | None] | np.ndarray, confidence: float = 0.95) -> dict[str, Any]:
    """Mean, sample std and the t-interval over seeds, of the values that are defined (a run that diverged
    before its first validation has no validation accuracy). What cannot be computed is None, and "note"
    says why: JSON has no NaN."""
    defined = [float(x) for x in values if x is not None]
    v = np.asarray(defined, dtype=np.float64)
    missing = len(values) - len(defined)
    note = f"undefined for {missing} of {len(values)} seeds" if missing else ""
    if len(v) < 2:
        why = note or "one seed: no spread or confidence interval"
        return {"mean": float(v.mean()) if len(v) else None, "std": None, "ci_low": None, "ci_high": None,
                "n": len(v), "note": why}
    mean = float(v.mean())
    std = float(v.std(ddof=1))
    half = float(st.t.ppf(0.5 + confidence / 2, len(v) - 1)) * std / math.sqrt(len(v))
    return {"mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half, "n": len(v),
            **({"note": note} if note else {})}


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, float]:
    """McNemar's test on paired correctness: exact binomial below 25 discordant pairs, else chi2 with correction."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    n = only_a + only_b
    if n == 0:
        return {"only_a": 0, "only_b": 0, "statistic": 0.0, "p_value": 1.0, "exact": True}
    if n < 25:
        p = float(min(1.0, 2 * st.binom.cdf(min(only_a, only_b), n, 0.5)))
        return {"only_a": only_a, "only_b": only_b, "statistic": float(min(only_a, only_b)), "p_value": p,
                "exact": True}
    stat = (abs(only_a - only_b) - 1) ** 2 / n
    p = float(st.chi2.sf(stat, 1))
    return {"only_a": only_a, "only_b": only_b, "statistic": stat, "p_value": p, "exact": False}


def bootstrap_diff(
    correct_a: np.ndarray, correct_b: np.ndarray, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95
) -> dict[str, float]:
    """Accuracy difference a - b and its paired percentile bootstrap CI over test images.

    Inputs are per-image correctness, either 0/1 or averaged over seeds (S x N arrays are averaged).
    """
    a = np.asarray(correct_a, np.float64).reshape(-1, np.shape(correct_a)[-1]).mean(0)
    b = np.asarray(correct_b, np.float64).reshape(-1, np.shape(correct_b)[-1]).mean(0)
    d = a - b
    rng = np.random.default_rng(seed)
    boots = np.empty(n_boot)
    for i in range(0, n_boot, 200):
        idx = rng.integers(0, len(d), size=(min(200, n_boot - i), len(d)))
        boots[i : i + len(idx)] = d[idx].mean(1)
    lo, hi = np.quantile(boots, [(1 - confidence) / 2, (1 + confidence) / 2])
    return {"diff": float(d.mean()), "ci_low": float(lo), "ci_high": float(hi)}


def compare(correct_a: np.ndarray, correct_b: np.ndarray, name_a: str, name_b: str) -> dict[str, Any]:
    """Compare two models given S x N correctness arrays paired by seed and test image.

    The difference is called significant only when every seed's McNemar p-value is below ALPHA
    and the bootstrap CI of the seed-averaged difference excludes zero.
    """
    a, b = np.atleast_2d(correct_a), np.atleast_2d(correct_b)
    seeds = min(len(a), len(b))
    tests = [mcnemar(a[i], b[i]) for i in range(seeds)]
    boot = bootstrap_diff(a[:seeds], b[:seeds])
    p_max = max(t["p_value"] for t in tests)
    significant = p_max < ALPHA and (boot["ci_low"] > 0 or boot["ci_high"] < 0)
    return {
        "a": name_a, "b": name_b, **boot, "p_values": [t["p_value"] for t in tests], "p_max": p_max,
        "significant": bool(significant), "sentence": sentence(name_a, name_b, boot, p_max, significant),
    }


def format_p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def sentence(name_a: str, name_b: str, boot: dict[str, float], p_max: float, significant: bool) -> str:
    pp = 100 * boot["diff"]
    ci = f"95% CI {100 * boot['ci_low']:.2f} to {100 * boot['ci_high']:.2f} pp"
    if not significant:
        return (
            f"{name_a} vs {name_b}: {pp:+.2f} pp ({ci}, McNemar {format_p(p_max)}) — "
            "not a significant difference."
        )
    verb = "beats" if pp > 0 else "trails"
    return f"{name_a} {verb} {name_b} by {abs(pp):.2f} pp ({ci}, McNemar {format_p(p_max)})."
