"""Classify image files with a trained model: top-k classes per image, optional Grad-CAM overlay.

The model is the run's predictor (fmlab.runs.Predictor: normalisation and test-time averaging
included), the one its test predictions were made with. Each file is read on its own (see
`fmlab.infer.images`), so one unreadable file yields an entry with an "error" and every other file
is still answered. A PNG/JPEG gives one entry; an `.npy` or IDX stack gives one entry per image,
numbered by "index".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fmlab.data.fashion_mnist import CLASS_NAMES
from fmlab.errors import ConfigError
from fmlab.evaluation.explain import Explainer
from fmlab.infer.images import ImageError, read
from fmlab.runs import RunDir, check_output, open_predictor

MAX_PANELS = 16  # Grad-CAM overlays drawn for at most this many images
PANEL = 112


def predict(
    checkpoint_or_run_dir: str | Path,
    paths: list[str | Path],
    top_k: int = 3,
    invert: bool | None = None,
    gradcam: str | Path | None = None,
) -> list[dict[str, Any]]:
    """One dict per image: file, index, prediction, probability, the top-k and what was done to the pixels
    (`preprocessing`); or file and error. `invert` None reads a photo's background off its border."""
    if not 1 <= top_k <= len(CLASS_NAMES):
        raise ConfigError(f"--top-k must be between 1 and {len(CLASS_NAMES)}, got {top_k}")
    if gradcam is not None:
        check_output(gradcam, [checkpoint_or_run_dir, *paths])
    predictor = open_predictor(checkpoint_or_run_dir)
    explainer = chosen_explainer(checkpoint_or_run_dir, predictor.spec.model) if gradcam is not None else None
    entries: list[dict[str, Any]] = []
    stacks: list[np.ndarray] = []
    pictures: list[np.ndarray | None] = []  # the photo each image came from (None for arrays), for the overlay
    for path in paths:
        try:
            images, steps, picture = read(path, invert=invert)
        except ImageError as exc:
            entries.append({"file": str(path), "error": str(exc)})
            continue
        stacks.append(images)
        pictures.extend([picture] * len(images))
        entries.extend({"file": str(path), "index": i, "preprocessing": steps} for i in range(len(images)))
    if not stacks:
        return entries
    pixels = np.concatenate(stacks)
    probs = torch.from_numpy(predictor.probs(pixels))
    top_p, top_i = probs.topk(top_k, dim=1)
    answered = [e for e in entries if "error" not in e]
    for entry, p_row, i_row in zip(answered, top_p.tolist(), top_i.tolist(), strict=True):
        top = [
            {"label": k, "class": CLASS_NAMES[k], "probability": round(p, 6)}
            for k, p in zip(i_row, p_row, strict=True)
        ]
        entry.update(prediction=top[0]["class"], label=top[0]["label"], probability=top[0]["probability"], top=top)
    if explainer is not None and gradcam is not None:
        preds = top_i[:, 0]
        stacked = {e["file"] for e in answered if e["index"] > 0}
        captions = [
            f"{Path(e['file']).name}" + (f"[{e['index']}]" if e["file"] in stacked else "")
            + f"\n{e['prediction']} {e['probability']:.0%}"
            for e in answered
        ]
        write_gradcam(gradcam, predictor.net, explainer, predictor.normalise(pixels[:MAX_PANELS]),
                      pixels[:MAX_PANELS], preds[:MAX_PANELS], captions, pictures[:MAX_PANELS])
    return entries


def chosen_explainer(source: str | Path, model: str) -> Explainer:
    """The explainer for overlays: the one `fmlab evaluate` chose and checked for this run when it has, else
    the one the registry records as measured best for this model; a ConfigError for models without one."""
    from fmlab import models

    run = RunDir(source)
    if run.eval.exists():
        found = run.eval.read_metrics().get("explanation")
        if found:
            return Explainer(found["method"], found["layer"])
    default = models.get(model).explainer
    if default is None:
        raise ConfigError(f"--gradcam needs a convolutional model; '{model}' has no feature maps to explain")
    return Explainer(*default)


def overlay_maps(net: nn.Module, explainer: Explainer, inputs: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    """Attribution maps (N, 28, 28), each scaled to [0, 1], for the given target classes."""
    maps = explainer.maps(net, inputs, targets).cpu().numpy()
    peak = maps.reshape(len(maps), -1).max(axis=1).reshape(-1, 1, 1)
    return np.divide(maps, peak, out=np.zeros_like(maps), where=peak > 0)


def write_gradcam(
    out: str | Path,
    model: nn.Module,
    explainer: Explainer,
    inputs: torch.Tensor,
    pixels: np.ndarray,
    targets: torch.Tensor,
    captions: list[str],
    pictures: list[np.ndarray | None],
) -> None:
    """Save one column per image as one PNG, atomically: the photo as given (when the image came from one), the
    28x28 input the model saw, and the heatmap over it in colour with a two-line caption."""
    from matplotlib import colormaps
    from PIL import Image, ImageDraw

    from fmlab.io import atomic_path

    heat = overlay_maps(model, explainer, inputs, targets)
    colours = colormaps["jet"](heat)[..., :3]  # (N, 28, 28, 3) in [0, 1]
    gray = np.repeat(pixels[..., None] / 255.0, 3, axis=-1)
    blend = (0.55 * gray + 0.45 * colours) * 255
    top = PANEL if any(p is not None for p in pictures) else 0
    sheet = Image.new("RGB", (PANEL * len(pixels), top + 2 * PANEL + 26), "white")
    draw = ImageDraw.Draw(sheet)
    for i, tile in enumerate(blend.round().astype(np.uint8)):
        x = i * PANEL
        if pictures[i] is not None:
            photo = Image.fromarray(pictures[i])
            sheet.paste(photo, (x + (PANEL - photo.width) // 2, (PANEL - photo.height) // 2))
        sheet.paste(Image.fromarray(pixels[i]).resize((PANEL, PANEL), Image.Resampling.NEAREST), (x, top))
        sheet.paste(Image.fromarray(tile).resize((PANEL, PANEL), Image.Resampling.BILINEAR), (x, top + PANEL))
        for row, text in enumerate(captions[i].splitlines()[:2]):
            draw.text((x + 2, top + 2 * PANEL + 1 + 12 * row), text[:19], fill="black")
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")
