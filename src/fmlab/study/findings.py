"""Sentences that state findings, generated from the numbers (never hard-coded)."""

from __future__ import annotations

from typing import Any

MECHANISM = {
    "linear": "flattens the 28x28 image into 784 numbers and scores each class with one weighted sum: "
    "no hidden features, so it can only separate classes linearly in pixel space.",
    "ffnn": "flattens the image into 784 numbers and passes them through fully connected hidden layers; "
    "every unit sees every pixel, so it learns global templates but has no notion of locality or shift.",
    "cnn": "slides small learned filters over the 2-D image, so features are local and shared across "
    "positions; pooling builds tolerance to small shifts before the fully connected classifier.",
}


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def clipped_ci(m: dict[str, float]) -> tuple[float, float]:
    """An accuracy's 95% interval over seeds, clipped to what an accuracy can be (few seeds give wide t ones)."""
    return max(m["ci_low"], 0.0), min(m["ci_high"], 1.0)


def ci_range(m: dict[str, float]) -> str:
    low, high = clipped_ci(m)
    return f"{pct(low)}\u2013{pct(high)}"


def ci_text(m: dict[str, float]) -> str:
    """An accuracy with its spread and its interval over seeds (clipped to what an accuracy can be)."""
    if m["n"] < 2:
        return f"{pct(m['mean'])} (1 seed)"
    low, high = clipped_ci(m)
    return f"{pct(m['mean'])} ± {100 * m['std']:.2f} (95% CI {pct(low)} to {pct(high)}, {m['n']} seeds)"


def headline(rows: list[dict[str, Any]], best: dict[str, str]) -> list[str]:
    """One sentence per family (its validation-selected variant), best first."""
    chosen = [r for r in rows if best.get(r["family"]) == r["variant"]]
    chosen.sort(key=lambda r: -r["accuracy"]["mean"])
    return [
        f"{r['title']}: best variant '{r['variant']}' (chosen on validation accuracy) reaches "
        f"{ci_text(r['accuracy'])} test accuracy, macro F1 {r['macro_f1']['mean']:.4f}, "
        f"macro AUC {r['macro_auc']['mean']:.4f}."
        for r in chosen
    ]


def fit_diagnosis(history: list[dict[str, float]], recipe_epochs: int,
                  reference: list[dict[str, float]] | None = None) -> str:
    """Read over- or underfitting off one run's curves, against its model's full recipe: `recipe_epochs`, and
    `reference`, the curves of the recipe itself trained on the same seed when this run is a variant of it.
    (A one-cycle schedule still rises at its last epoch by design, so a rising curve alone says nothing.)"""
    if not history:
        return "no training curves recorded."
    last = history[-1]
    gap = last["train_acc"] - last["val_acc"]
    losses = [h["val_loss"] for h in history]
    low = min(range(len(losses)), key=losses.__getitem__)
    rise = (losses[-1] - losses[low]) / losses[low] if losses[low] > 0 else 0.0
    text = (f"final train accuracy {pct(last['train_acc'])} vs validation {pct(last['val_acc'])} "
            f"(gap {100 * gap:.1f} pp)")
    if low + 1 < len(losses) and rise > 0.1:
        return (f"{text}; validation loss bottomed at epoch {low + 1} of {len(losses)} and then rose "
                f"{100 * rise:.0f}%: overfitting — the best checkpoint (by validation accuracy) is kept.")
    if gap > 0.03:
        return f"{text}: the model fits training data noticeably better than unseen data (mild overfitting)."
    if len(history) < recipe_epochs:
        return (f"{text}; trained {len(history)} of its recipe's {recipe_epochs} epochs: underfitting against "
                "the recipe, its full schedule would likely add accuracy.")
    if reference and reference != history:
        ref = reference[-1]
        if last["val_acc"] < ref["val_acc"] - 0.005:
            kind = "overfitting" if last["train_acc"] >= ref["train_acc"] else "underfitting"
            return (f"{text}; its recipe (the baseline, same seed) ends at train {pct(ref['train_acc'])}, validation "
                    f"{pct(ref['val_acc'])}: {kind} relative to the recipe.")
    if gap < -0.02:
        return (f"{text}: validation above training accuracy, the mark of strong regularisation (dropout, "
                "augmentation, penalties) rather than overfitting.")
    return f"{text}: train and validation agree, no sign of over- or underfitting against its recipe."


def class_findings(ev: dict[str, Any], class_names: tuple[str, ...]) -> str:
    per = ev["per_class"]
    worst = min(per, key=lambda k: per[k]["f1"])
    best = max(per, key=lambda k: per[k]["f1"])
    cm = ev["confusion_matrix"]
    pairs = sorted(
        ((cm[i][j], class_names[i], class_names[j]) for i in range(10) for j in range(10) if i != j), reverse=True
    )[:2]
    conf = "; ".join(f"{a} taken for {b} {n} times" for n, a, b in pairs)
    return (f"hardest class {worst} (F1 {per[worst]['f1']:.3f}), easiest {best} (F1 {per[best]['f1']:.3f}); "
            f"top confusions: {conf}.")


def agreement_findings(study: Any, comparison: dict[str, Any]) -> list[str]:
    """For each [[compare]] pair of CNN families: how alike their explanations are (from the comparison)."""
    from fmlab import models

    out = []
    for pair in study.compare:
        a, b = pair.a.partition("/")[0], pair.b.partition("/")[0]
        if a == b or not all(models.get(study.families[f].model).family == "cnn" for f in (a, b)):
            continue
        found = comparison["agreement"].get(f"{a} vs {b}") or comparison["agreement"].get(f"{b} vs {a}")
        if found:
            out.append(f"{pair.title or a + ' vs ' + b}: {found['sentence']}")
    return out
