"""Classification metrics from predictions: scikit-learn for everything it has, ECE for what it lacks."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn import metrics as skm
from sklearn.preprocessing import label_binarize

from fmlab.errors import FmlabError

NUM_CLASSES = 10
ECE_BINS = 15
LABELS = list(range(NUM_CLASSES))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def normalise(probs: np.ndarray, source: str = "predictions") -> np.ndarray:
    """float64 rows summing to 1 (stored float32 probabilities are off by ~1e-7)."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != NUM_CLASSES or not np.isfinite(p).all() or (p < 0).any():
        raise FmlabError(f"{source}: probabilities must be finite, non-negative and of shape (N, 10), got {p.shape}")
    return p / p.sum(axis=1, keepdims=True)


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS) -> dict[str, Any]:
    """ECE over equal-width confidence bins (lo, hi]: sum of |accuracy - confidence| weighted by bin size."""
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.searchsorted(edges[1:-1], conf, side="left")
    count = np.bincount(which, minlength=n_bins).astype(np.float64)
    safe = np.maximum(count, 1)
    acc = np.bincount(which, weights=correct, minlength=n_bins) / safe
    mean_conf = np.bincount(which, weights=conf, minlength=n_bins) / safe
    ece = float(np.sum(count / max(len(labels), 1) * np.abs(acc - mean_conf)))
    return {
        "ece": ece,
        "bins": {"edges": edges.tolist(), "count": count.astype(int).tolist(),
                 "accuracy": acc.tolist(), "confidence": mean_conf.tolist()},
    }


def roc_auc(y_bin: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """One-vs-rest ROC AUC per class (NaN for a class absent from, or alone in, the labels), micro and macro.

    Macro is the mean over the classes where AUC is defined (sklearn's macro when all are).
    """
    defined = [0 < y_bin[:, k].sum() < len(y_bin) for k in range(probs.shape[1])]
    per_class = np.array([skm.roc_auc_score(y_bin[:, k], probs[:, k]) if ok else math.nan
                          for k, ok in enumerate(defined)])
    micro = skm.roc_auc_score(y_bin.ravel(), probs.ravel()) if 0 < y_bin.sum() < y_bin.size else math.nan
    macro = float(np.mean(per_class[defined])) if any(defined) else math.nan
    return {"micro": micro, "macro": macro, "per_class": list(per_class)}


def _clean(value: Any) -> Any:
    """JSON-safe: NaN -> None, numpy scalars -> Python numbers."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_clean(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else float(value)
    return value


def compute(labels: np.ndarray, probs: np.ndarray, class_names: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """Every classification metric of the evaluation, as a JSON-ready dict."""
    labels = np.asarray(labels, dtype=np.int64)
    probs = normalise(probs)
    pred = probs.argmax(axis=1)
    y_bin = label_binarize(labels, classes=LABELS)
    p, r, f, s = skm.precision_recall_fscore_support(labels, pred, labels=LABELS, zero_division=0)
    averages = {}
    for avg in ("macro", "micro", "weighted"):
        ap, ar, af, _ = skm.precision_recall_fscore_support(labels, pred, labels=LABELS, average=avg, zero_division=0)
        averages[avg] = {"precision": ap, "recall": ar, "f1": af}
    auc = roc_auc(y_bin, probs)
    out = {
        "n": len(labels),
        "accuracy": skm.accuracy_score(labels, pred),
        "top2_accuracy": skm.top_k_accuracy_score(labels, probs, k=2, labels=LABELS),
        "log_loss": skm.log_loss(labels, probs, labels=LABELS),
        "ece": expected_calibration_error(labels, probs)["ece"],
        "ece_bins": ECE_BINS,
        "per_class": {
            name: {"precision": p[k], "recall": r[k], "f1": f[k], "support": int(s[k]), "roc_auc": auc["per_class"][k]}
            for k, name in enumerate(class_names)
        },
        "averages": averages,
        "roc_auc": auc,
        "confusion_matrix": skm.confusion_matrix(labels, pred, labels=LABELS).tolist(),
    }
    return _clean(out)


def classification_report(labels: np.ndarray, probs: np.ndarray, class_names: tuple[str, ...] | list[str]) -> str:
    """scikit-learn's text report with class names."""
    pred = np.asarray(probs).argmax(axis=1)
    return skm.classification_report(
        labels, pred, labels=LABELS, target_names=list(class_names), digits=4, zero_division=0
    )


def roc_curves(labels: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """One-vs-rest ROC curves per class plus the micro (pooled) and macro (mean TPR) averages."""
    y_bin = label_binarize(labels, classes=LABELS)
    curves: dict[str, Any] = {"per_class": []}
    for k in LABELS:
        if 0 < y_bin[:, k].sum() < len(labels):
            fpr, tpr, _ = skm.roc_curve(y_bin[:, k], probs[:, k])
        else:
            fpr, tpr = np.array([0.0, 1.0]), np.array([0.0, 1.0])
        curves["per_class"].append((fpr, tpr))
    curves["micro"] = skm.roc_curve(y_bin.ravel(), probs.ravel())[:2]
    grid = np.unique(np.concatenate([fpr for fpr, _ in curves["per_class"]]))
    curves["macro"] = (grid, np.mean([np.interp(grid, fpr, tpr) for fpr, tpr in curves["per_class"]], axis=0))
    return curves


def top_confusions(confusion: np.ndarray | list, k: int = 3) -> list[tuple[int, int, int]]:
    """The k largest off-diagonal cells as (true, predicted, count), largest first, non-zero only."""
    cm = np.array(confusion, dtype=np.int64)
    np.fill_diagonal(cm, 0)
    order = np.argsort(-cm, axis=None, kind="stable")[:k]
    return [(int(i), int(j), int(cm[i, j])) for i, j in zip(*np.unravel_index(order, cm.shape), strict=True)
            if cm[i, j] > 0]
