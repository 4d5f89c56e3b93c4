"""Statistics for honest comparisons: CIs over seeds, a two-level bootstrap, the chance of winning on a new
seed, Holm's correction for the number of comparisons, and the smallest difference a study resolves.

A model's test accuracy varies with the seed (initialisation, batches, augmentation) and with the test
images drawn. `compare` resamples both: seeds of each model independently and test images jointly (the
models saw the same images), so its interval and p-value count seed-to-seed variance, not only image
resampling (Bouthillier et al. 2021). McNemar's test per seed is kept as the classic image-level check.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats as st

ALPHA = 0.05
POWER = 0.8
N_BOOT = 2000


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


def two_level_bootstrap(correct_a: np.ndarray, correct_b: np.ndarray, n_boot: int = N_BOOT, seed: int = 0,
                        images: bool = True) -> np.ndarray:
    """Bootstrap replicates of mean accuracy(A) - mean accuracy(B) from S x N correctness arrays: each
    replicate draws the seeds of A and of B with replacement and (with `images`) the test images, the same
    draw for both models."""
    a, b = np.atleast_2d(correct_a).astype(np.float64), np.atleast_2d(correct_b).astype(np.float64)
    rng = np.random.default_rng(seed)
    n = a.shape[1]
    out = np.empty(n_boot)
    for start in range(0, n_boot, 100):
        k = min(100, n_boot - start)
        if images:  # how often each image is drawn in each replicate
            draws = rng.integers(0, n, (k, n)) + n * np.arange(k)[:, None]
            weights = np.bincount(draws.ravel(), minlength=k * n).reshape(k, n).T / n
        else:
            weights = np.full((n, k), 1 / n)
        acc_a, acc_b = a @ weights, b @ weights  # (S, k): each seed's accuracy on each replicate's images
        seeds_a = rng.integers(0, len(a), (len(a), k))
        seeds_b = rng.integers(0, len(b), (len(b), k))
        cols = np.arange(k)
        out[start : start + k] = acc_a[seeds_a, cols].mean(0) - acc_b[seeds_b, cols].mean(0)
    return out


def win_probability(acc_a: np.ndarray, acc_b: np.ndarray) -> float:
    """P(A beats B on a new seed), estimated over every pair of seeds (ties count half)."""
    diff = np.subtract.outer(np.asarray(acc_a), np.asarray(acc_b))
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values: reject where adjusted p < alpha, family-wise error <= alpha."""
    p = np.asarray(p_values, np.float64)
    order = np.argsort(p)
    m = len(p)
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order]).clip(max=1.0)
    out = np.empty(m)
    out[order] = adjusted
    return out.tolist()


def compare(correct_a: np.ndarray, correct_b: np.ndarray, name_a: str, name_b: str, n_boot: int = N_BOOT,
            seed: int = 0) -> dict[str, Any]:
    """Compare two models from S x N correctness arrays (seeds x the same test images): the accuracy difference
    with a two-level bootstrap CI and p-value, P(A beats B on a new seed) with a bootstrap interval, McNemar
    per seed pair, and the bootstrap standard error (for the smallest detectable difference). The verdict
    waits for `correct`, which applies the correction for the number of comparisons."""
    a, b = np.atleast_2d(correct_a), np.atleast_2d(correct_b)
    acc_a, acc_b = a.mean(1), b.mean(1)
    boots = two_level_bootstrap(a, b, n_boot, seed)
    lo, hi = np.quantile(boots, [0.025, 0.975])
    p = min(1.0, 2 * min((np.sum(boots <= 0) + 1) / (n_boot + 1), (np.sum(boots >= 0) + 1) / (n_boot + 1)))
    rng = np.random.default_rng(seed + 1)
    wins = [win_probability(acc_a[rng.integers(0, len(acc_a), len(acc_a))],
                            acc_b[rng.integers(0, len(acc_b), len(acc_b))]) for _ in range(n_boot)]
    pairs = min(len(a), len(b))
    return {
        "a": name_a, "b": name_b, "seeds_a": len(a), "seeds_b": len(b),
        "diff": float(acc_a.mean() - acc_b.mean()), "ci_low": float(lo), "ci_high": float(hi), "p_value": p,
        "se": float(boots.std(ddof=1)),
        "win_probability": win_probability(acc_a, acc_b),
        "win_ci": [float(x) for x in np.quantile(wins, [0.025, 0.975])],
        "mcnemar_p": [mcnemar(a[i], b[i])["p_value"] for i in range(pairs)],
    }


def correct(comparisons: list[dict[str, Any]], alpha: float = ALPHA) -> list[dict[str, Any]]:
    """Holm-correct the p-values of all `comparisons` of a study together and write each verdict: significant
    when the corrected p < alpha; the smallest detectable difference at POWER for the corrected level."""
    m = len(comparisons)
    adjusted = holm([c["p_value"] for c in comparisons]) if m else []
    out = []
    for c, p_holm in zip(comparisons, adjusted, strict=True):
        z = st.norm.ppf(1 - alpha / (2 * m)) + st.norm.ppf(POWER)  # Bonferroni's level: Holm's strictest step
        c = {**c, "p_holm": p_holm, "comparisons": m, "significant": bool(p_holm < alpha), "mde": float(z * c["se"])}
        out.append({**c, "sentence": sentence(c)})
    return out


def format_p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def sentence(c: dict[str, Any]) -> str:
    """The finding a corrected comparison supports, and no more."""
    pp = 100 * c["diff"]
    ci = f"95% CI {100 * c['ci_low']:+.2f} to {100 * c['ci_high']:+.2f} pp over seeds and test images"
    correction = f"Holm-corrected for {c['comparisons']} comparison{'s' if c['comparisons'] != 1 else ''}"
    win = (f"P({c['a']} beats {c['b']} on a new seed) = {c['win_probability']:.2f} "
           f"[{c['win_ci'][0]:.2f}, {c['win_ci'][1]:.2f}]")
    if not c["significant"]:
        return (f"{c['a']} vs {c['b']}: {pp:+.2f} pp ({ci}), not significant ({format_p(c['p_holm'])}, "
                f"{correction}): any true difference is likely smaller than {100 * c['mde']:.2f} pp, the smallest "
                f"this study resolves with {int(100 * POWER)}% power; {win}.")
    verb = "beats" if pp > 0 else "trails"
    return (f"{c['a']} {verb} {c['b']} by {abs(pp):.2f} pp ({ci}; {format_p(c['p_holm'])}, {correction}); "
            f"{win}.")
