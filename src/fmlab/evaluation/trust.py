"""The checks an explanation has to pass before the report calls it one.

- Faithfulness: deletion and insertion areas per image (black baseline) against random pixel orders, with
  bootstrap confidence intervals over a fixed stratified sample of images.
- Sanity (Adebayo et al. 2018, "Sanity Checks for Saliency Maps"): cascading model-parameter
  randomisation from the output layer down; after each step, the rank correlation of the maps with the
  trained model's maps over the garment's (non-black) pixels, where unrelated maps score 0. A map that
  stays the same when the model's weights are random does not explain the model.
- Choice: every candidate explainer of a CNN (method x layer) is measured on validation images; the one
  with the largest faithfulness margin that passes the sanity check is reported, on test images.
- Agreement between two models' maps on the same images: rank correlation (over the garment's pixels, as
  above) and overlap of the top 10% of pixels, per class.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata
from torch import nn

from fmlab.evaluation.explain import Explainer, candidates, deletion_insertion, random_maps

RANDOM_ORDERS = 3
RANDOM_SEED = 7919
SANITY_THRESHOLD = 0.5  # mean rank correlation with the trained maps once every layer is random
TOP = 0.10
BOOT = 2000


def mean_ci(values: np.ndarray, seed: int = 0, confidence: float = 0.95) -> dict[str, float]:
    """Mean and percentile bootstrap interval over images."""
    v = np.asarray(values, np.float64)
    boots = v[np.random.default_rng(seed).integers(0, len(v), (BOOT, len(v)))].mean(1)
    lo, hi = np.quantile(boots, [(1 - confidence) / 2, (1 + confidence) / 2])
    return {"mean": float(v.mean()), "ci_low": float(lo), "ci_high": float(hi)}


def garment(x: torch.Tensor, baseline: float) -> np.ndarray:
    """The pixels (N, H, W) of normalised images (N, 1, H, W) that are not black (`baseline`): what map
    agreement is measured over."""
    return (x[:, 0] > baseline + 1e-4).cpu().numpy()  # one grey level is about 1e-2 after normalisation


def rank_correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Spearman correlation of each pair of maps (N, H, W) over the pixels `mask` selects (from `garment`): a
    set fixed by the image, not by the maps, so unrelated maps score 0 on average. Over the pixels either map
    marks instead, two unrelated sparse maps score about -0.5 (what one marks is the other's zero); over every
    pixel, the black background that input-times-gradient maps leave at zero would count as agreement.
    0 where a map is constant on the mask (it ranks nothing)."""
    flat_a, flat_b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    used = mask.reshape(len(mask), -1).astype(bool)
    count = np.maximum(used.sum(1, keepdims=True), 1)
    ranks = [rankdata(np.where(used, m, np.nan), axis=1, nan_policy="omit") for m in (flat_a, flat_b)]
    ra, rb = (np.where(used, r - np.nansum(r, axis=1, keepdims=True) / count, 0.0) for r in ranks)
    denom = np.sqrt((ra**2).sum(1) * (rb**2).sum(1))
    return np.divide((ra * rb).sum(1), denom, out=np.zeros(len(a)), where=denom > 0)


def top_overlap(a: np.ndarray, b: np.ndarray, top: float = TOP) -> np.ndarray:
    """Share of each map's top `top` pixels that are also among the other's."""
    flat_a, flat_b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    k = max(1, round(top * flat_a.shape[1]))
    top_a = np.argsort(-flat_a, axis=1, kind="stable")[:, :k]
    top_b = np.argsort(-flat_b, axis=1, kind="stable")[:, :k]
    return np.array([len(np.intersect1d(x, y)) / k for x, y in zip(top_a, top_b, strict=True)])


def random_order(net: nn.Module, x: torch.Tensor, target: torch.Tensor, baseline: float,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-image deletion and insertion areas of random pixel orders (the mean of RANDOM_ORDERS): what a map
    has to beat. The same for every map of these images, so computed once."""
    rand = [deletion_insertion(net, x, random_maps((len(x), *x.shape[-2:]), seed + k).to(x.device), target,
                               baseline, seed=seed) for k in range(1, RANDOM_ORDERS + 1)]
    return np.mean([r[0] for r in rand], 0), np.mean([r[1] for r in rand], 0)


def faithfulness(net: nn.Module, x: torch.Tensor, target: torch.Tensor, maps: torch.Tensor, baseline: float,
                 seed: int = 0, random: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """Deletion and insertion areas of `maps` against random orders (`random`, from random_order), per image;
    margin = (random deletion - deletion) + (insertion - random insertion), > 0 when the map beats chance."""
    deletion, insertion = deletion_insertion(net, x, maps, target, baseline, seed=seed)
    rand_deletion, rand_insertion = random if random is not None else random_order(net, x, target, baseline, seed)
    margin = (rand_deletion - deletion) + (insertion - rand_insertion)
    out = {"images": len(x), "deletion": mean_ci(deletion, seed), "insertion": mean_ci(insertion, seed),
           "random_deletion": mean_ci(rand_deletion, seed), "random_insertion": mean_ci(rand_insertion, seed),
           "margin": mean_ci(margin, seed)}
    out["beats_random"] = out["margin"]["ci_low"] > 0
    return out


def _parametrised(net: nn.Module) -> list[str]:
    """Modules holding parameters, output side first (the cascade's order)."""
    names = [name for name, m in net.named_modules() if name and any(True for _ in m.parameters(recurse=False))]
    return names[::-1]


def randomisation(net: nn.Module, explainer: Explainer, x: torch.Tensor, target: torch.Tensor, baseline: float,
                  seed: int = 0, maps: torch.Tensor | None = None) -> dict[str, Any]:
    """Cascading randomisation: re-initialise the parametrised layers one by one from the output down and
    record, after each, the mean rank correlation between the maps and the trained model's maps."""
    trained = (maps if maps is not None else explainer.maps(net, x, target, baseline)).cpu().numpy()
    mask = garment(x, baseline)
    model = copy.deepcopy(net).eval()
    # a seed of its own: training seeds its initialisation with the run's seed, and weights training barely moved
    # (those of always-black border pixels) would come back unchanged
    torch.manual_seed(RANDOM_SEED + seed)
    steps = []
    for name in _parametrised(model):
        module = model.get_submodule(name)
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
        else:
            for p in module.parameters(recurse=False):
                nn.init.normal_(p, std=0.1)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):  # random scale, so the layer is not an identity
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.normal_(module.bias, std=0.1)
        after = explainer.maps(model, x, target, baseline).cpu().numpy()
        steps.append({"layer": name, "rank_correlation": float(rank_correlation(trained, after, mask).mean())})
    final = steps[-1]["rank_correlation"] if steps else 1.0
    return {"steps": steps, "final_rank_correlation": final, "threshold": SANITY_THRESHOLD,
            "passes": final < SANITY_THRESHOLD}


@dataclass
class Analysis:
    """An explainer chosen for a network, its checks, and its maps on the report images."""

    explainer: Explainer
    candidates: list[dict[str, Any]]  # per candidate, on the selection images: margin and sanity
    faithfulness: dict[str, Any]  # the chosen explainer's, on the report images
    sanity: dict[str, Any]
    maps: np.ndarray  # (N, H, W) on the report images

    @property
    def explains(self) -> bool:
        return bool(self.faithfulness["beats_random"] and self.sanity["passes"])

    def summary(self) -> dict[str, Any]:
        return {"method": self.explainer.method, "layer": self.explainer.layer, "label": self.explainer.label,
                "explains": self.explains, "verdict": self.verdict(), "faithfulness": self.faithfulness,
                "sanity": self.sanity, "candidates": self.candidates}

    def verdict(self) -> str:
        f, s = self.faithfulness, self.sanity
        margin = f"margin over random order {f['margin']['mean']:+.3f} (95% CI {f['margin']['ci_low']:+.3f} to " \
                 f"{f['margin']['ci_high']:+.3f}) on {f['images']} test images"
        sanity = f"rank correlation with a fully randomised model's maps {s['final_rank_correlation']:.2f}"
        if self.explains:
            return f"{self.explainer.label} explains this model: {margin}; {sanity} (below {s['threshold']})."
        why = [w for w, bad in (("it is no more faithful than random order", not f["beats_random"]),
                                ("its maps barely change when the model's weights are random", not s["passes"])) if bad]
        return f"{self.explainer.label} does not explain this model: {' and '.join(why)} ({margin}; {sanity})."


def best_with(candidates: Sequence[dict[str, Any]], method: str) -> Explainer | None:
    """The most faithful candidate of `method` that passes the sanity check (any, when none passes)."""
    rows = [r for r in candidates if r["method"] == method]
    rows = [r for r in rows if r["passes"]] or rows
    return Explainer(method, max(rows, key=lambda r: r["margin"])["layer"]) if rows else None


def analyse(net: nn.Module, model: str, baseline: float, select: tuple[torch.Tensor, torch.Tensor],
            report: tuple[torch.Tensor, torch.Tensor], seed: int = 0,
            options: Sequence[Explainer] | None = None) -> Analysis:
    """Measure every candidate on the selection images (inputs, target classes), choose the most faithful
    one that passes the sanity check (the most faithful when none does), and check it on the report images."""
    net = net.eval()
    rows = []
    chance = random_order(net, *select, baseline, seed)
    for explainer in options if options is not None else candidates(model):
        maps = explainer.maps(net, select[0], select[1], baseline)
        faith = faithfulness(net, select[0], select[1], maps, baseline, seed, chance)
        sanity = randomisation(net, explainer, select[0], select[1], baseline, seed, maps)
        rows.append({"label": explainer.label, "method": explainer.method, "layer": explainer.layer,
                     "margin": faith["margin"]["mean"], "beats_random": faith["beats_random"],
                     "final_rank_correlation": sanity["final_rank_correlation"], "passes": sanity["passes"]})
    passing = [r for r in rows if r["passes"]] or rows
    best = max(passing, key=lambda r: r["margin"])
    chosen = Explainer(best["method"], best["layer"])
    maps = chosen.maps(net, report[0], report[1], baseline)
    return Analysis(chosen, rows, faithfulness(net, report[0], report[1], maps, baseline, seed),
                    randomisation(net, chosen, report[0], report[1], baseline, seed, maps), maps.cpu().numpy())


def agreement(maps_a: np.ndarray, maps_b: np.ndarray, mask: np.ndarray, labels: np.ndarray,
              class_names: Sequence[str], seed: int = 0) -> dict[str, Any]:
    """How alike two sets of maps of the same images are: rank correlation over the images' `mask` (from
    `garment`) and top-10% overlap, overall (with bootstrap CIs) and per class."""
    corr, overlap = rank_correlation(maps_a, maps_b, mask), top_overlap(maps_a, maps_b)
    return {"rank_correlation": mean_ci(corr, seed), "top_overlap": mean_ci(overlap, seed), "images": len(corr),
            "per_class": {name: {"rank_correlation": float(corr[labels == k].mean()),
                                 "top_overlap": float(overlap[labels == k].mean())}
                          for k, name in enumerate(class_names) if (labels == k).any()}}
