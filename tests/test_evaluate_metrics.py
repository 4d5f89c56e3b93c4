import math

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.preprocessing import label_binarize

from fmlab.data import CLASS_NAMES
from fmlab.evaluation import metrics as M


@pytest.fixture(scope="module")
def predictions():
    """Labels and probabilities: random but fixed, better than chance."""
    rng = np.random.default_rng(42)
    labels = rng.integers(0, 10, size=2000)
    logits = rng.normal(size=(2000, 10)) * 2
    logits[np.arange(2000), labels] += 2.5
    return labels, M.softmax(logits)


def test_metrics_agree_with_sklearn(predictions):
    labels, probs = predictions
    got = M.compute(labels, probs, CLASS_NAMES)
    # independent sklearn computation
    y, p = labels, probs
    pred = p.argmax(1)
    assert got["n"] == len(y)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    pr, rc, f1, sup = skm.precision_recall_fscore_support(y, pred)
    for k, name in enumerate(CLASS_NAMES):
        c = got["per_class"][name]
        assert (c["precision"], c["recall"], c["f1"], c["support"]) == pytest.approx((pr[k], rc[k], f1[k], sup[k]))
    for avg in ("macro", "micro", "weighted"):
        want = skm.precision_recall_fscore_support(y, pred, average=avg)[:3]
        a = got["averages"][avg]
        assert (a["precision"], a["recall"], a["f1"]) == pytest.approx(want)
    assert got["confusion_matrix"] == skm.confusion_matrix(y, pred).tolist()
    y_bin = label_binarize(y, classes=range(10))
    assert got["roc_auc"]["per_class"] == pytest.approx([skm.roc_auc_score(y_bin[:, k], p[:, k]) for k in range(10)])
    assert got["roc_auc"]["macro"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", average="macro"))
    assert got["roc_auc"]["micro"] == pytest.approx(skm.roc_auc_score(y_bin, p, average="micro"))
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, p), rel=1e-6)
    assert got["top2_accuracy"] == pytest.approx(skm.top_k_accuracy_score(y, p, k=2))
    assert 0 < got["ece"] < 1


def test_top2_accuracy_by_hand():
    labels = np.array([0, 1, 2, 3])
    probs = np.full((4, 10), 0.01)
    probs[0, [0, 1]] = [0.5, 0.4]  # top-1 correct
    probs[1, [0, 1]] = [0.5, 0.4]  # second best: top-2 correct
    probs[2, [0, 1, 2]] = [0.5, 0.3, 0.12]  # third: wrong
    probs[3, [3, 4]] = [0.2, 0.7]  # second best
    got = M.compute(labels, probs, CLASS_NAMES)
    assert got["accuracy"] == pytest.approx(0.25)
    assert got["top2_accuracy"] == pytest.approx(0.75)


def test_ece_known_value():
    # 10 images at confidence 0.9 of which 6 are right, 10 at confidence 0.55 of which 5 are right:
    # ECE = 0.5 * |0.6 - 0.9| + 0.5 * |0.5 - 0.55| = 0.175
    labels = np.zeros(20, dtype=np.int64)
    probs = np.zeros((20, 10))
    for i in range(20):
        conf = 0.9 if i < 10 else 0.55
        right = i < 6 or 10 <= i < 15
        top = 0 if right else 1
        probs[i, top] = conf
        probs[i, [k for k in range(10) if k != top]] = (1 - conf) / 9
    out = M.expected_calibration_error(labels, probs)
    assert out["ece"] == pytest.approx(0.175)
    assert sum(out["bins"]["count"]) == 20
    assert len(out["bins"]["count"]) == 15
    assert M.compute(labels, probs, CLASS_NAMES)["ece"] == pytest.approx(0.175)


def test_perfectly_calibrated_has_zero_ece():
    labels = np.array([0] * 3 + [1])  # confidence 0.75 each, 3 of 4 right
    probs = np.zeros((4, 10))
    probs[:, 0], probs[:, 1] = 0.75, 0.25
    assert M.expected_calibration_error(labels, probs)["ece"] == pytest.approx(0.0)


def test_missing_class_gives_null_auc_not_a_crash():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 9, size=200)  # class 9 never occurs
    probs = rng.dirichlet(np.ones(10), size=200)
    got = M.compute(labels, probs, CLASS_NAMES)
    assert got["roc_auc"]["per_class"][9] is None
    assert all(v is not None and not math.isnan(v) for v in got["roc_auc"]["per_class"][:9])
    assert got["per_class"]["Ankle boot"]["support"] == 0


def test_top_confusions():
    cm = np.diag([50] * 10)
    cm[6, 0], cm[0, 6], cm[4, 2] = 30, 20, 25
    assert M.top_confusions(cm, 2) == [(6, 0, 30), (4, 2, 25)]
    assert M.top_confusions(np.diag([5] * 10)) == []


def test_classification_report_has_class_names(predictions):
    labels, probs = predictions
    text = M.classification_report(labels, probs, CLASS_NAMES)
    assert all(name in text for name in CLASS_NAMES)
    assert "macro avg" in text
