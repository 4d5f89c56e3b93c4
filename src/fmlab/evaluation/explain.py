"""Attribution maps via captum, the candidates a CNN is explained with, deletion/insertion curves per image,
and the overlay grids (the side-by-side comparison view).

For a CNN the method and layer are chosen by measurement (fmlab.evaluation.trust): Grad-CAM, HiResCAM
(gradient x activation summed over channels, which keeps the map's resolution faithful to the layer's) and
guided Grad-CAM, each at every post-activation feature map the registry lists. Non-CNNs are explained with
input gradients and integrated gradients.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from captum.attr import GuidedGradCam, IntegratedGradients, LayerAttribution, LayerGradCam, LayerGradientXActivation
from captum.attr import Saliency as CaptumSaliency
from matplotlib.figure import Figure
from torch import nn

from fmlab import models
from fmlab.evaluation.plots import new_figure

IG_STEPS = 32
LABELS = {"gradcam": "Grad-CAM", "hirescam": "HiResCAM", "guided_gradcam": "Guided Grad-CAM",
          "saliency": "Saliency |∂y/∂x|", "integrated_gradients": "Integrated gradients"}
LAYER_METHODS = ("gradcam", "hirescam", "guided_gradcam")
INPUT_METHODS = ("saliency", "integrated_gradients")


@dataclass(frozen=True)
class Explainer:
    """One way to explain a model's prediction: a method and, for layer methods, the layer it reads."""

    method: str
    layer: str | None = None  # dotted module path (registry.explain_layers)

    @property
    def label(self) -> str:
        return LABELS[self.method] + (f" ({self.layer})" if self.layer else "")

    def maps(self, net: nn.Module, x: torch.Tensor, target: torch.Tensor, baseline: float = 0.0) -> torch.Tensor:
        """One map per image, (N, H, W), non-negative: evidence for class `target` of each image."""
        net.eval()
        x = x.detach().clone().requires_grad_(True)
        target = torch.as_tensor(target, device=x.device).long()
        with torch.enable_grad():
            return _MAPS[self.method](self, net, x, target, baseline).detach()


def _upsampled(attr: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    up = LayerAttribution.interpolate(attr, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    return up.sum(dim=1).clamp_min(0)


def _gradcam(e: Explainer, net: nn.Module, x: torch.Tensor, t: torch.Tensor, _: float) -> torch.Tensor:
    layer = net.get_submodule(e.layer)
    return _upsampled(LayerGradCam(net, layer).attribute(x, target=t, relu_attributions=True), x)


def _hirescam(e: Explainer, net: nn.Module, x: torch.Tensor, t: torch.Tensor, _: float) -> torch.Tensor:
    layer = net.get_submodule(e.layer)
    return _upsampled(LayerGradientXActivation(net, layer).attribute(x, target=t).sum(1, keepdim=True), x)


def _guided(e: Explainer, net: nn.Module, x: torch.Tensor, t: torch.Tensor, _: float) -> torch.Tensor:
    layer = net.get_submodule(e.layer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # captum notes that it hooks the ReLUs' backward pass (and unhooks them)
        return GuidedGradCam(net, layer).attribute(x, target=t).sum(dim=1).clamp_min(0)


def _saliency(e: Explainer, net: nn.Module, x: torch.Tensor, t: torch.Tensor, _: float) -> torch.Tensor:
    return CaptumSaliency(net).attribute(x, target=t, abs=True).sum(dim=1)


def _integrated(e: Explainer, net: nn.Module, x: torch.Tensor, t: torch.Tensor, baseline: float) -> torch.Tensor:
    attr = IntegratedGradients(net).attribute(x, baselines=baseline, target=t, n_steps=IG_STEPS,
                                              internal_batch_size=max(len(x) * 8, 64))
    return attr.sum(dim=1).clamp_min(0)


_MAPS = {"gradcam": _gradcam, "hirescam": _hirescam, "guided_gradcam": _guided, "saliency": _saliency,
         "integrated_gradients": _integrated}


def candidates(model: str) -> list[Explainer]:
    """Every explainer tried for a registered model: layer methods at each listed layer for CNNs, input
    attributions otherwise."""
    layers = models.get(model).explain_layers
    if layers:
        return [Explainer(m, layer) for layer in layers for m in LAYER_METHODS]
    return [Explainer(m) for m in INPUT_METHODS]


@torch.no_grad()
def _target_probs(net: nn.Module, x: torch.Tensor, target: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    return torch.cat([net(x[i : i + chunk]).float().softmax(1) for i in range(0, len(x), chunk)]).gather(
        1, target.view(-1, 1)
    ).view(-1)


def deletion_insertion(
    net: nn.Module, x: torch.Tensor, maps: torch.Tensor, target: torch.Tensor, baseline: float, steps: int = 20,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-image areas under the deletion and insertion curves (RISE, Petsiuk et al. 2018) of `maps` (N, H, W).

    Deletion: replace the most-attributed pixels by `baseline` (a black pixel: no signal added) in `steps`
    equal chunks and track the probability of `target`; a faithful map makes it fall fast (low area).
    Insertion: start from the all-black image and restore pixels in the same order (high area). Ties in a
    map are broken at random."""
    n, h, w = maps.shape
    d = h * w
    rng = np.random.default_rng(seed)
    scores = maps.detach().reshape(n, d).cpu().double().numpy()
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
    probs = _target_probs(net, torch.cat(deleted + inserted), target.repeat(2 * len(fractions)))
    curves = probs.view(2, len(fractions), n).cpu().numpy()
    areas = np.trapezoid(curves, fractions, axis=1)
    return areas[0], areas[1]


def random_maps(shape: Sequence[int], seed: int = 0) -> torch.Tensor:
    """Seeded random maps: the order a real attribution has to beat."""
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
