import numpy as np
import pytest
from scipy import stats as st
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

from fmlab.evaluate import stats


def paired(both: int, only_a: int, only_b: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.r_[np.ones(both + only_a), np.zeros(only_b + neither)].astype(bool)
    b = np.r_[np.ones(both), np.zeros(only_a), np.ones(only_b), np.zeros(neither)].astype(bool)
    return a, b


@pytest.mark.parametrize("table", [(50, 9, 3, 38), (500, 60, 31, 409), (100, 0, 0, 10), (7, 12, 30, 1)])
def test_mcnemar_matches_statsmodels(table):
    both, only_a, only_b, neither = table
    a, b = paired(*table)
    ours = stats.mcnemar(a, b)
    exact = only_a + only_b < 25
    ref = sm_mcnemar([[both, only_a], [only_b, neither]], exact=exact, correction=True)
    assert ours["p_value"] == pytest.approx(min(1.0, float(ref.pvalue)), rel=1e-9)
    assert (ours["only_a"], ours["only_b"]) == (only_a, only_b)


def test_mean_ci_matches_scipy_t_interval():
    values = [0.91, 0.93, 0.92, 0.925]
    ci = stats.mean_ci(values)
    lo, hi = st.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=st.sem(values))
    assert (ci["ci_low"], ci["ci_high"]) == pytest.approx((lo, hi))
    one = stats.mean_ci([0.9])
    assert one["ci_low"] is one["ci_high"] is one["std"] is None and "one seed" in one["note"]


def test_bootstrap_ci_contains_true_difference_and_is_seeded():
    rng = np.random.default_rng(1)
    a = rng.random(5000) < 0.92
    b = rng.random(5000) < 0.88
    boot = stats.bootstrap_diff(a, b)
    assert boot["diff"] == pytest.approx(a.mean() - b.mean())
    assert boot["ci_low"] < boot["diff"] < boot["ci_high"]
    assert boot["ci_low"] > 0
    assert boot == stats.bootstrap_diff(a, b)


def test_compare_says_plainly_when_not_significant():
    rng = np.random.default_rng(2)
    a = rng.random((3, 2000)) < 0.9
    same = stats.compare(a, a.copy(), "A", "B")
    assert not same["significant"] and "not a significant difference" in same["sentence"]
    b = a & (rng.random((3, 2000)) < 0.8)
    better = stats.compare(a, b, "CNN", "FFNN")
    assert better["significant"] and better["sentence"].startswith("CNN beats FFNN by")
    assert better["p_max"] < 0.05 and better["ci_low"] > 0
