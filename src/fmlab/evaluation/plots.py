"""Evaluation figures (matplotlib Agg, no pyplot state): each builder returns a Figure, `save` writes it atomically."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

from fmlab.evaluation.metrics import roc_curves
from fmlab.io import atomic_path

DPI = 100


def new_figure(width: float, height: float, layout: str | None = None) -> Figure:
    """A pyplot-free Agg figure. Layout is fixed by each builder (constrained layout costs seconds per figure)."""
    fig = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(fig)
    return fig


def png(fig: Figure, dpi: int = DPI) -> bytes:
    """`fig` as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def pdf(fig: Figure) -> bytes:
    """`fig` as vector PDF bytes (for papers; images inside it stay images)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="pdf", metadata={"CreationDate": None})  # no date: the same figure, the same bytes
    return buf.getvalue()


def save(fig: Figure, path: str | Path, dpi: int = DPI) -> Path:
    """Write `fig` as a PNG atomically; returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(png(fig, dpi))
    return path


def confusion_figure(confusion: np.ndarray | list, class_names: Sequence[str], title: str = "") -> Figure:
    """Counts and row-normalised (recall per true class) confusion matrices side by side."""
    cm = np.asarray(confusion, dtype=np.int64)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    fig = new_figure(17, 7.5)
    axes = fig.subplots(1, 2, gridspec_kw={"left": 0.08, "right": 0.98, "bottom": 0.14, "top": 0.92, "wspace": 0.2})
    for ax, matrix, fmt, name in ((axes[0], cm, "d", "counts"), (axes[1], norm, ".2f", "row-normalised (recall)")):
        ConfusionMatrixDisplay(matrix, display_labels=list(class_names)).plot(
            ax=ax, cmap="Blues", values_format=fmt, xticks_rotation=45, text_kw={"fontsize": 8}
        )
        ax.set_title(f"Confusion matrix, {name}")
        ax.set_xlabel("Predicted class")
        ax.set_ylabel("True class")
    if title:
        fig.suptitle(title)
    return fig


def roc_figure(
    labels: np.ndarray, probs: np.ndarray, class_names: Sequence[str], auc: dict[str, Any], title: str = ""
) -> Figure:
    """One one-vs-rest ROC panel per class (AUC in the title) plus an overlay with micro and macro averages."""
    curves = roc_curves(labels, probs)
    fig = new_figure(21, 7)
    grid = fig.add_gridspec(2, 7, left=0.04, right=0.99, bottom=0.08, top=0.9, wspace=0.4, hspace=0.4)
    overlay = fig.add_subplot(grid[:, 5:])
    for k, name in enumerate(class_names):
        ax = fig.add_subplot(grid[k // 5, k % 5])
        fpr, tpr = curves["per_class"][k]
        value = auc["per_class"][k]
        text = "n/a" if value is None else f"{value:.4f}"
        RocCurveDisplay(fpr=fpr, tpr=tpr).plot(ax=ax, plot_chance_level=True, curve_kwargs={"color": f"C{k}"})
        ax.set_title(f"{name}: AUC {text}", fontsize=10)
        ax.set(xlabel="False positive rate", ylabel="True positive rate")
        ax.get_legend().remove()
        overlay.plot(fpr, tpr, color=f"C{k}", lw=1, alpha=0.7, label=f"{name} ({text})")
    for key, style in (("micro", ":"), ("macro", "--")):
        value = auc[key]
        overlay.plot(*curves[key], color="k", ls=style, lw=2,
                     label=f"{key}-average ({'n/a' if value is None else f'{value:.4f}'})")
    overlay.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="-.")
    overlay.set(xlabel="False positive rate", ylabel="True positive rate", title="All classes, one-vs-rest",
                xlim=(0, 1), ylim=(0, 1.01), aspect="equal")
    overlay.legend(loc="lower right", fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def curves_figure(history: list[dict[str, float]], title: str = "") -> Figure:
    """Train vs validation loss and accuracy per epoch."""
    fig = new_figure(11, 4.2)
    axes = fig.subplots(1, 2, gridspec_kw={"left": 0.07, "right": 0.98, "bottom": 0.13, "top": 0.86, "wspace": 0.22})
    epochs = [h["epoch"] for h in history]
    for ax, key in zip(axes, ("loss", "acc"), strict=True):
        for split, style in (("train", "-o"), ("val", "-s")):
            ax.plot(epochs, [h.get(f"{split}_{key}", np.nan) for h in history], style, ms=4,
                    label="train" if split == "train" else "validation")
        ax.set(xlabel="Epoch", ylabel="Accuracy" if key == "acc" else "Cross-entropy loss",
               title="Accuracy" if key == "acc" else "Loss")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return fig


def reliability_figure(panels: Sequence[tuple[str, dict[str, list], float]], title: str = "") -> Figure:
    """Accuracy against confidence per bin (gap shaded), with the confidence histogram below; one column per
    (label, bins, ECE) panel, e.g. before and after temperature scaling."""
    fig = new_figure(5.2 * len(panels), 6.5)
    axes = fig.subplots(2, len(panels), height_ratios=[3, 1], sharex=True, squeeze=False, gridspec_kw={
        "left": 0.14 / len(panels), "right": 0.98, "bottom": 0.08, "top": 0.88, "hspace": 0.08, "wspace": 0.25})
    for (label, bins, ece), top, bottom in zip(panels, axes[0], axes[1], strict=True):
        edges = np.asarray(bins["edges"])
        count, acc, conf = (np.asarray(bins[k], dtype=float) for k in ("count", "accuracy", "confidence"))
        centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
        used = count > 0
        top.bar(centres[used], acc[used], width=width[used], edgecolor="k", color="C0", label="accuracy")
        top.bar(centres[used], conf[used] - acc[used], bottom=acc[used], width=width[used], fill=False,
                edgecolor="C3", hatch="//", label="gap to mean confidence")
        top.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
        top.set(ylabel="Accuracy", xlim=(0, 1), ylim=(0, 1), title=f"{label}: ECE {ece:.4f}")
        top.legend(loc="upper left", fontsize=8)
        bottom.bar(centres, count, width=width, color="grey", edgecolor="k")
        bottom.set(xlabel="Confidence (max probability)", ylabel="Images")
        bottom.set_yscale("symlog")
    if title:
        fig.suptitle(title)
    return fig


def confident_mistakes(
    labels: np.ndarray, probs: np.ndarray, true: int, pred: int, n: int = 6
) -> np.ndarray:
    """Indices of images of class `true` predicted as `pred`, most confident first."""
    pred_all = probs.argmax(axis=1)
    idx = np.flatnonzero((labels == true) & (pred_all == pred))
    return idx[np.argsort(-probs[idx, pred], kind="stable")][:n]


def mistakes_figure(
    images: np.ndarray, labels: np.ndarray, probs: np.ndarray, class_names: Sequence[str],
    pairs: Sequence[tuple[int, int, int]], per_pair: int = 6, title: str = "",
) -> Figure:
    """The most confident mistakes for each of the top confused (true, predicted) class pairs."""
    rows = max(len(pairs), 1)
    fig = new_figure(1.7 * per_pair + 1.2, 2.1 * rows + 0.5)
    axes = fig.subplots(rows, per_pair, squeeze=False, gridspec_kw={
        "left": 1.0 / (1.7 * per_pair + 1.2), "right": 0.99, "bottom": 0.02, "top": 1 - 0.9 / (2.1 * rows + 0.5),
        "wspace": 0.1, "hspace": 0.35})
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        ax.spines[:].set_visible(False)
    if not pairs:
        axes[0, 0].text(0, 0.5, "no mistakes", fontsize=12)
    for r, (true, pred, count) in enumerate(pairs):
        axes[r, 0].set_ylabel(f"{class_names[true]}\n→ {class_names[pred]}\n({count} errors)", fontsize=9)
        for c, i in enumerate(confident_mistakes(labels, probs, true, pred, per_pair)):
            axes[r, c].imshow(images[i], cmap="gray", vmin=0, vmax=255)
            axes[r, c].set_title(f"#{i}\np({class_names[pred]}) = {probs[i, pred]:.2f}", fontsize=8)
    fig.suptitle(title or "Most confident mistakes (true → predicted, probability of the prediction)")
    return fig
