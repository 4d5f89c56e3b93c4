"""Attributions via captum (Grad-CAM for CNNs, saliency and integrated gradients otherwise), overlays,
the side-by-side comparison view, and a deletion/insertion faithfulness score."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Saliency
from matplotlib.figure import Figure
from torch import nn

from fmlab.evaluate.plots import new_figure

METHODS = {"cnn": ("gradcam",), "ffnn": ("saliency", "integrated_gradients"),
           "linear": ("saliency", "integrated_gradients")}
PRIMARY = {"cnn": "gradcam", "ffnn": "integrated_gradients", "linear": "integrated_gradients"}
LABELS = {"gradcam": "Grad-CAM", "saliency": "Saliency |∂y/∂x|", "integrated_gradients": "Integrated gradients"}
IG_STEPS = 32


def methods_for(family: str) -> tuple[str, ...]:
    """Attribution methods that apply to a model family: Grad-CAM for CNNs, gradients for the rest."""
    return METHODS.get(family, METHODS["ffnn"])


def gradcam(model: nn.Module, layer: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Grad-CAM on `layer` for class `target`, ReLU'd and bilinearly upsampled to the input size: (N, H, W) >= 0."""
    attr = LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True)
    up = LayerAttribution.interpolate(attr, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    return up.sum(dim=1).clamp_min(0).detach()


def saliency(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Absolute input gradient of the class score: (N, H, W) >= 0."""
    return Saliency(model).attribute(x, target=target, abs=True).sum(dim=1).detach()


def integrated_gradients(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, baseline: float = 0.0, n_steps: int = IG_STEPS
) -> torch.Tensor:
    """Integrated gradients from a constant (black) baseline, positive evidence only: (N, H, W) >= 0."""
    attr = IntegratedGradients(model).attribute(
        x, baselines=baseline, target=target, n_steps=n_steps, internal_batch_size=max(len(x) * 8, 64)
    )
    return attr.sum(dim=1).clamp_min(0).detach()


def attribute(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, method: str,
    layer: nn.Module | None = None, baseline: float = 0.0,
) -> torch.Tensor:
    """One attribution map per image, (N, H, W), non-negative, for class `target` of each image."""
    model.eval()
    x = x.detach().clone().requires_grad_(True)
    target = torch.as_tensor(target, device=x.device).long()
    with torch.enable_grad():
        if method == "gradcam":
            if layer is None:
                raise ValueError("Grad-CAM needs the model's target layer")
            return gradcam(model, layer, x, target)
        if method == "saliency":
            return saliency(model, x, target)
        if method == "integrated_gradients":
            return integrated_gradients(model, x, target, baseline)
    raise ValueError(f"unknown attribution method {method!r}")


@torch.no_grad()
def _target_probs(model: nn.Module, x: torch.Tensor, target: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    return torch.cat([model(x[i : i + chunk]).float().softmax(1) for i in range(0, len(x), chunk)]).gather(
        1, target.view(-1, 1)
    ).view(-1)


def faithfulness(
    model: nn.Module, x: torch.Tensor, attr: torch.Tensor, target: torch.Tensor,
    baseline: float = 0.0, steps: int = 20, seed: int = 0,
) -> dict[str, float]:
    """Deletion and insertion curves (RISE, Petsiuk et al. 2018) for attribution maps `attr` (N, H, W).

    Deletion: replace the most-attributed pixels by `baseline` in `steps` equal chunks and track the
    probability of `target`; its area (lower = better) is the faithfulness score. Insertion: start from the
    baseline image and restore pixels in the same order (higher = better). Ties are broken at random.
    """
    n, h, w = attr.shape
    d = h * w
    rng = np.random.default_rng(seed)
    scores = attr.detach().reshape(n, d).cpu().double().numpy()
    order = np.lexsort((rng.random((n, d)), -scores), axis=-1)
    rank = torch.as_tensor(np.argsort(order, axis=-1), device=x.device).view(n, 1, h, w)
    target = torch.as_tensor(target, device=x.device).long()
    fractions = np.linspace(0.0, 1.0, steps + 1)
    base = torch.full_like(x, baseline)
    deleted, inserted = [], []
    for frac in fractions:
        mask = rank < round(frac * d)
        deleted.append(torch.where(mask, base, x))
        inserted.append(torch.where(mask, x, base))
    probs = _target_probs(model, torch.cat(deleted + inserted), target.repeat(2 * len(fractions)))
    curves = probs.view(2, len(fractions), n).cpu().numpy()
    auc = np.trapezoid(curves, fractions, axis=1).mean(axis=1)
    return {"deletion_auc": float(auc[0]), "insertion_auc": float(auc[1]), "steps": steps, "images": n}


def random_attribution(shape: Sequence[int], seed: int = 0) -> torch.Tensor:
    """A seeded random map: the reference a real attribution should beat."""
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def pick_per_class(labels: np.ndarray, per_class: int = 1, seed: int = 0) -> np.ndarray:
    """`per_class` seeded random indices of each class present, in class order."""
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(labels == k), size=min(per_class, int((labels == k).sum())), replace=False)
             for k in np.unique(labels)]
    return np.concatenate(picks).astype(np.int64) if picks else np.zeros(0, np.int64)


def pick_disagreements(preds: Sequence[np.ndarray], n: int = 6, seed: int = 0,
                       exclude: np.ndarray | None = None) -> np.ndarray:
    """Up to `n` seeded random indices where the models' predicted classes are not all equal."""
    stack = np.stack(preds)
    idx = np.flatnonzero((stack != stack[0]).any(axis=0))
    if exclude is not None:
        idx = np.setdiff1d(idx, exclude)
    if len(idx) == 0:
        return idx.astype(np.int64)
    return np.sort(np.random.default_rng(seed).choice(idx, size=min(n, len(idx)), replace=False)).astype(np.int64)


@dataclass
class Column:
    """One heatmap column of an overlay grid: a title, maps (N, H, W), a caption per image and, optionally,
    whether each caption's prediction is right (wrong ones are drawn in red)."""

    title: str
    maps: np.ndarray
    captions: Sequence[str]
    correct: Sequence[bool] | None = None


def heatmap_grid(images: np.ndarray, columns: Sequence[Column], row_labels: Sequence[str], title: str = "") -> Figure:
    """Rows of `Input | heatmap | heatmap | ...`. Each map is scaled to its own maximum and overlaid on the
    grayscale image with opacity growing with the attribution, so unattributed pixels stay visible."""
    rows, cols = len(images), len(columns) + 1
    width, height = 1.9 * cols + 0.8, 2.1 * rows + 1.2
    fig = new_figure(width, height)
    axes = fig.subplots(rows, cols, squeeze=False, gridspec_kw={
        "left": 0.8 / width, "right": 0.99, "bottom": 0.3 / height, "top": 1 - 1.1 / height,
        "wspace": 0.08, "hspace": 0.3})
    for r in range(rows):
        axes[r, 0].imshow(images[r], cmap="gray", vmin=0, vmax=255)
        axes[r, 0].set_ylabel(row_labels[r], fontsize=8)
        for c, col in enumerate(columns, start=1):
            ax = axes[r, c]
            heat = np.clip(col.maps[r] / max(float(col.maps[r].max()), 1e-12), 0, 1)
            ax.imshow(images[r], cmap="gray", vmin=0, vmax=255)
            ax.imshow(heat, cmap="jet", alpha=0.7 * np.sqrt(heat), vmin=0, vmax=1)
            wrong = col.correct is not None and not col.correct[r]
            empty = "" if col.maps[r].max() > 0 else "\n(no positive attribution)"
            ax.set_xlabel(col.captions[r] + empty, fontsize=8, color="C3" if wrong else "k")
    for c, text in enumerate(["Input", *(col.title for col in columns)]):
        axes[0, c].set_title(text, fontsize=9)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.text(0.5, 1 - 0.15 / height, title, ha="center", va="top", fontsize=10, wrap=True)
    return fig


def captions(probs: np.ndarray, class_names: Sequence[str]) -> list[str]:
    """`Shirt (87%)`: the predicted class and its probability, for each row of probabilities."""
    return [f"{class_names[int(p.argmax())]} ({p.max():.0%})" for p in probs]
