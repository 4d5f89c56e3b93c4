import numpy as np
import pytest
from scipy import stats as st
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

from fmlab.evaluation import stats


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


def test_holm_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    p = [0.01, 0.04, 0.03, 0.005, 0.2, 0.0001, 0.049]
    assert stats.holm(p) == pytest.approx(list(multipletests(p, method="holm")[1]))


def test_the_seed_level_bootstrap_agrees_with_scipy():
    """With image resampling off, the two-level bootstrap is scipy's two-sample bootstrap of the seeds'
    accuracies; with one seed each, it is scipy's paired bootstrap over images."""
    rng = np.random.default_rng(0)
    a = rng.random((5, 400)) < np.array([0.90, 0.92, 0.88, 0.91, 0.93])[:, None]
    b = rng.random((4, 400)) < np.array([0.87, 0.89, 0.86, 0.90])[:, None]
    ours = np.quantile(stats.two_level_bootstrap(a, b, 20000, images=False), [0.025, 0.975])
    ref = st.bootstrap((a.mean(1), b.mean(1)), lambda x, y: x.mean() - y.mean(), n_resamples=20000,
                       method="percentile", paired=False, random_state=1).confidence_interval
    assert ours == pytest.approx([ref.low, ref.high], abs=0.002)
    one_a, one_b = a[:1].astype(float), b[:1].astype(float)
    ours = np.quantile(stats.two_level_bootstrap(one_a, one_b, 20000), [0.025, 0.975])
    ref = st.bootstrap((one_a[0], one_b[0]), lambda x, y: x.mean() - y.mean(), n_resamples=20000,
                       method="percentile", paired=True, random_state=1).confidence_interval
    assert ours == pytest.approx([ref.low, ref.high], abs=0.004)


def test_seed_variance_widens_the_interval_beyond_image_resampling():
    rng = np.random.default_rng(3)
    spread = np.array([0.86, 0.92, 0.89])[:, None]  # very different seeds
    a = rng.random((3, 3000)) < spread
    b = rng.random((3, 3000)) < 0.885
    both = np.ptp(np.quantile(stats.two_level_bootstrap(a, b), [0.025, 0.975]))
    images_only = np.ptp(np.quantile(stats.two_level_bootstrap(a.mean(0, keepdims=True) > 0.5, b[:1]),
                                     [0.025, 0.975]))
    assert both > 1.5 * images_only


def test_win_probability_by_hand():
    assert stats.win_probability([0.9, 0.92], [0.91]) == 0.5
    assert stats.win_probability([0.9, 0.9], [0.9]) == 0.5  # ties count half
    assert stats.win_probability([0.95], [0.9, 0.91]) == 1.0


def test_compare_and_correct_say_no_more_than_the_test():
    rng = np.random.default_rng(2)
    a = rng.random((3, 2000)) < 0.9
    b = a & (rng.random((3, 2000)) < 0.8)
    same = stats.compare(a, a.copy(), "A", "B")
    better = stats.compare(a, b, "CNN", "FFNN")
    corrected = stats.correct([same, better, stats.compare(b, a, "FFNN", "CNN")])
    same, better, worse = corrected
    assert [c["comparisons"] for c in corrected] == [3, 3, 3]
    assert not same["significant"] and "not significant" in same["sentence"]
    assert f"smaller than {100 * same['mde']:.2f} pp" in same["sentence"] and same["mde"] > 0
    assert better["significant"] and better["sentence"].startswith("CNN beats FFNN by")
    assert "Holm-corrected for 3 comparisons" in better["sentence"] and better["win_probability"] == 1.0
    assert worse["significant"] and worse["sentence"].startswith("FFNN trails CNN by")
    assert better["p_holm"] >= better["p_value"] and better["ci_low"] > 0


def test_the_correction_can_turn_a_finding_down():
    """A difference that passes alone at 5% does not pass among many comparisons."""
    rng = np.random.default_rng(5)
    a = rng.random((3, 4000)) < 0.91
    b = rng.random((3, 4000)) < 0.898
    finding = stats.compare(a, b, "A", "B")
    null = stats.compare(a, a, "X", "Y")  # 19 more comparisons that find nothing (one computed, named apart)
    alone = stats.correct([finding])[0]
    many = stats.correct([finding] + [{**null, "a": f"X{i}"} for i in range(19)])[0]
    assert alone["p_value"] == many["p_value"] and many["p_holm"] > alone["p_holm"]
    assert many["mde"] > alone["mde"]
