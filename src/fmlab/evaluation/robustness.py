"""How accuracy holds up when test images move, turn or get noisy (evaluation only, no retraining).

Shifts move the garment by 1-4 pixels (the mean over up, down, left and right, black fill); rotations
turn it by a few degrees (the mean over both directions); noise adds Gaussian pixel noise (a fraction
of the full [0, 255] range). A CNN's shared filters and pooling are built for the first; a fully
connected network, which sees each pixel position as a separate input, is not.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from fmlab.evaluation.plots import new_figure

SHIFTS = (1, 2, 3, 4)  # pixels
ROTATIONS = (5, 10, 15)  # degrees
NOISE = (0.05, 0.1, 0.2)  # std as a fraction of 255
KINDS = {"shift": ("shift (pixels)", SHIFTS), "rotation": ("rotation (degrees)", ROTATIONS),
         "noise": ("pixel noise (std, fraction of 255)", NOISE)}


def shifted(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(images)
    h, w = images.shape[1:]
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = \
        images[:, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)]
    return out


def rotated(images: np.ndarray, degrees: float) -> np.ndarray:
    theta = math.radians(degrees)
    affine = torch.tensor([[math.cos(theta), -math.sin(theta), 0.0], [math.sin(theta), math.cos(theta), 0.0]])
    x = torch.from_numpy(images).float().unsqueeze(1)
    grid = F.affine_grid(affine.expand(len(x), 2, 3), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.squeeze(1).round().clamp(0, 255).to(torch.uint8).numpy()


def noisy(images: np.ndarray, std: float, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0.0, std * 255.0, images.shape)
    return np.clip(images + noise, 0, 255).round().astype(np.uint8)


def variants(kind: str, level: float, images: np.ndarray, seed: int) -> list[np.ndarray]:
    """The perturbed copies whose accuracies are averaged for one (kind, level)."""
    if kind == "shift":
        d = int(level)
        return [shifted(images, dy, dx) for dy, dx in ((d, 0), (-d, 0), (0, d), (0, -d))]
    if kind == "rotation":
        return [rotated(images, level), rotated(images, -level)]
    return [noisy(images, level, seed)]


def robustness(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray, labels: np.ndarray,
               seed: int = 0) -> dict[str, Any]:
    """Accuracy of `predict` (uint8 images -> class indices) on clean and perturbed copies of `images`."""
    def accuracy(batch: np.ndarray) -> float:
        return float((predict(batch) == labels).mean())

    out: dict[str, Any] = {"images": len(images), "clean": accuracy(images)}
    for kind, (_, levels) in KINDS.items():
        out[kind] = {str(level): float(np.mean([accuracy(v) for v in variants(kind, level, images, seed)]))
                     for level in levels}
    return out


def sentence(title: str, result: dict[str, Any]) -> str:
    clean = result["clean"]

    def drop(kind: str, level: float) -> float:
        return 100 * (result[kind][str(level)] - clean)

    return (f"{title}: {100 * clean:.1f}% on the clean images; {drop('shift', 2):+.1f} pp when shifted by 2 pixels, "
            f"{drop('shift', 4):+.1f} pp by 4, {drop('rotation', 10):+.1f} pp when rotated by 10 degrees, "
            f"{drop('noise', 0.1):+.1f} pp with noise of std 0.1.")


def figure(results: dict[str, dict[str, Any]]) -> Figure:
    """One panel per kind of perturbation: accuracy against its strength, a line per model."""
    fig = new_figure(15, 4.2)
    axes = fig.subplots(1, 3, gridspec_kw={"left": 0.05, "right": 0.99, "bottom": 0.14, "top": 0.86, "wspace": 0.2})
    for ax, (kind, (label, levels)) in zip(axes, KINDS.items(), strict=True):
        for name, result in results.items():
            ax.plot([0, *levels], [100 * result["clean"], *(100 * result[kind][str(v)] for v in levels)], "-o",
                    ms=4, label=name)
        ax.set(xlabel=label, ylabel="test accuracy (%)", title=f"Accuracy under {kind}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Robustness: the same test images moved, turned and made noisy (no retraining)")
    return fig
