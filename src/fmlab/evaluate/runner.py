"""Evaluate run directories: metrics, report, figures, attributions, complexity; compare several side by side.

Every input is read and every figure built before the first file is written, so bad input (a missing,
corrupt or mismatched checkpoint) leaves no partial output behind.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fmlab.data import CLASS_NAMES, FashionMNIST
from fmlab.errors import FmlabError
from fmlab.evaluate import complexity, explain, plots
from fmlab.evaluate import metrics as M
from fmlab.io import write_json, write_text

INFER_BATCH = 1024


@dataclass
class Run:
    """Everything read from one run directory, plus the model's test-set probabilities."""

    run_dir: Path
    model_name: str
    family: str
    model: nn.Module
    layer: nn.Module | None
    mean: float
    std: float
    probs: np.ndarray
    source: str  # where the probabilities came from: "predictions.npz" or "checkpoint"
    run_metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, float]] | None = None

    @property
    def baseline(self) -> float:
        """A black pixel in the model's normalised input space."""
        return (0.0 - self.mean) / self.std

    def inputs(self, images: np.ndarray, device: torch.device) -> torch.Tensor:
        from fmlab.data.split import to_tensor

        return to_tensor(images, self.mean, self.std, device)


def current_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("mps" if torch.backends.mps.is_available() else "cpu")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FmlabError(f"{path}: unreadable ({str(exc).splitlines()[0]}); rerun fmlab train") from None
    if not isinstance(value, dict):
        raise FmlabError(f"{path}: expected a JSON object; rerun fmlab train")
    return value


@torch.inference_mode()
def predict_probs(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Softmax probabilities (float64) of `model` on a normalised batch, in chunks."""
    logits = torch.cat([model(x[i : i + INFER_BATCH]).float().cpu() for i in range(0, len(x), INFER_BATCH)])
    return M.softmax(logits.numpy())


def open_run(run_dir: str | Path, device: torch.device) -> Run:
    """Read a run directory's checkpoint (checked against config.json), run metrics and history; no data yet."""
    from fmlab import models
    from fmlab.train.checkpoint import load_model

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FmlabError(f"{run_dir}: no such run directory; pass a folder written by fmlab train")
    config = _read_json(run_dir / "config.json")
    model, payload = load_model(run_dir, expect_model=config.get("model"))
    name = str(payload["model"])
    spec = models.get(name)
    model = model.to(device).eval()
    norm = payload.get("norm") or {}
    mean, std = float(norm.get("mean", 0.0)), float(norm.get("std", 1.0))
    run = Run(run_dir, name, spec.family, model, models.target_layer(model, name), mean, std,
              np.zeros((0, 10)), "checkpoint", _read_json(run_dir / "metrics.json"))
    if (run_dir / "history.csv").is_file():
        try:
            run.history = plots.read_history(run_dir / "history.csv") or None
        except (OSError, ValueError, KeyError):
            run.history = None
    return run


def attach_predictions(run: Run, data: FashionMNIST, device: torch.device) -> Run:
    """Test-set probabilities: from predictions.npz when it matches the test labels (what training
    recorded, test-time augmentation included), otherwise from the checkpoint on the test split."""
    preds = run.run_dir / "predictions.npz"
    if preds.is_file():
        try:
            labels, probs = M.load_predictions(preds)
            if np.array_equal(labels, data.y_test):
                run.probs, run.source = probs, "predictions.npz"
        except FmlabError:
            pass  # unreadable: recompute below
    if run.source == "checkpoint":
        run.probs = predict_probs(run.model, run.inputs(data.x_test, device))
    return run


def load_run(run_dir: str | Path, data: FashionMNIST, device: torch.device) -> Run:
    """open_run + attach_predictions."""
    return attach_predictions(open_run(run_dir, device), data, device)


def _attributions(run: Run, images: np.ndarray, device: torch.device, methods: Sequence[str], seed: int = 0
                  ) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, dict[str, float]]]:
    """Maps per method for each image's predicted class, the model's probabilities, and faithfulness scores."""
    x = run.inputs(images, device)
    probs = predict_probs(run.model, x)
    target = torch.as_tensor(probs.argmax(axis=1), device=device)
    maps, faith = {}, {}
    random_map = explain.random_attribution((len(x), *x.shape[-2:]), seed).to(device)
    reference = explain.faithfulness(run.model, x, random_map, target, run.baseline, seed=seed)
    for method in methods:
        attr = explain.attribute(run.model, x, target, method, run.layer, run.baseline)
        maps[method] = attr.cpu().numpy()
        faith[method] = explain.faithfulness(run.model, x, attr, target, run.baseline, seed=seed)
        faith[method]["deletion_auc_random"] = reference["deletion_auc"]
        faith[method]["insertion_auc_random"] = reference["insertion_auc"]
    return maps, probs, faith


def _row_labels(idx: np.ndarray, labels: np.ndarray, prefix: str = "") -> list[str]:
    return [f"{prefix}#{i}\ntrue {CLASS_NAMES[labels[i]]}" for i in idx]


def _evaluate(run: Run, data: FashionMNIST, device: torch.device, seed: int, timing_s: float,
              figures: bool = True) -> tuple[dict, dict]:
    """(metrics.json content, {file name: Figure or text}) for one loaded run; without `figures`,
    only the numbers and the text report (no attributions, no PNGs)."""
    labels, probs = data.y_test, run.probs
    title = f"{run.model_name} ({run.run_dir.name})"
    result = M.compute(labels, probs, CLASS_NAMES)
    ece = M.expected_calibration_error(labels, probs)
    checkpoint = run.run_dir / "checkpoint.pt"
    result["complexity"] = complexity.profile(run.model, device, checkpoint, min_seconds=timing_s)
    train_time = run.run_metrics.get("train_time_s")
    if train_time is None and run.history:
        train_time = sum(h.get("seconds", 0.0) for h in run.history)
    result["training"] = {"train_time_s": train_time, **{k: run.run_metrics.get(k) for k in
                                                          ("status", "epochs_run", "best_epoch", "best_val_acc")}}
    artifacts: dict[str, Any] = {"classification_report.txt": M.classification_report(labels, probs, CLASS_NAMES)}
    if figures:
        artifacts.update(_figures(run, data, device, seed, result, ece, title))
    result = {"run": str(run.run_dir), "model": run.model_name, "family": run.family,
              "predictions_source": run.source, **result, "artifacts": sorted([*artifacts, "metrics.json"])}
    return result, artifacts


def _figures(run: Run, data: FashionMNIST, device: torch.device, seed: int, result: dict[str, Any],
             ece: dict[str, Any], title: str) -> dict[str, Any]:
    """The per-run figures; also records the attribution faithfulness scores in `result`."""
    labels, probs = data.y_test, run.probs
    idx = explain.pick_per_class(labels, 1, seed)
    methods = explain.methods_for(run.family)
    maps, sample_probs, faith = _attributions(run, data.x_test[idx], device, methods, seed)
    result["faithfulness"] = faith
    artifacts: dict[str, Any] = {
        "confusion_matrix.png": plots.confusion_figure(result["confusion_matrix"], CLASS_NAMES, title),
        "roc.png": plots.roc_figure(labels, probs, CLASS_NAMES, result["roc_auc"], title),
        "reliability.png": plots.reliability_figure(ece["bins"], ece["ece"], title),
        "mistakes.png": plots.mistakes_figure(
            data.x_test, labels, probs, CLASS_NAMES, M.top_confusions(result["confusion_matrix"], 4), 6,
            f"{title}: most confident mistakes for the top confusions"),
        "attributions.png": explain.heatmap_grid(
            data.x_test[idx],
            [explain.Column(explain.LABELS[m], maps[m], explain.captions(sample_probs, CLASS_NAMES),
                            sample_probs.argmax(axis=1) == labels[idx]) for m in methods],
            _row_labels(idx, labels), f"{title}: attributions for the predicted class (red: wrong)"),
    }
    if run.history:
        artifacts["training_curves.png"] = plots.curves_figure(run.history, title)
    return artifacts


def _write(out_dir: Path, result: dict[str, Any], artifacts: dict[str, Any]) -> None:
    for name, item in artifacts.items():
        if isinstance(item, str):
            write_text(out_dir / name, item)
        else:
            plots.save(item, out_dir / name)
    write_json(out_dir / "metrics.json", result)


def evaluate_run(
    run_dir: str | Path, out_dir: str | Path | None = None, data: FashionMNIST | None = None,
    *, data_dir: str | Path | None = None, seed: int = 0, timing_s: float = 0.5, figures: bool = True,
) -> dict[str, Any]:
    """Evaluate one run on the test split; write metrics.json, the report and (with `figures`) the figures
    to out_dir (default RUN_DIR/eval). Returns the metrics.json content plus "out_dir"."""
    from fmlab.data import load

    device = current_device()
    run = open_run(run_dir, device)  # bad checkpoints fail here, before the data is read
    data = data if data is not None else load(data_dir)
    attach_predictions(run, data, device)
    result, artifacts = _evaluate(run, data, device, seed, timing_s, figures)
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "eval"
    _write(out, result, artifacts)
    return {**result, "out_dir": str(out)}


def unique_names(run_dirs: Sequence[Path]) -> list[str]:
    """Short distinct folder names for runs: the last path part, more parts when two collide."""
    parts = [Path(p).resolve().parts for p in run_dirs]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["-".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [f"{i}-{Path(p).name}" for i, p in enumerate(run_dirs)]


def compare_runs(
    run_dirs: Sequence[str | Path], out_dir: str | Path, data: FashionMNIST | None = None,
    *, data_dir: str | Path | None = None, seed: int = 0, per_class: int = 1, disagreements: int = 6,
    timing_s: float = 0.5, figures: bool = True,
) -> dict[str, Any]:
    """Evaluate every run into OUT/<run name>/ (figures optional) and write the side-by-side comparison
    view (comparison.png: Input | model A heatmap | model B heatmap | ...) and comparison.json."""
    from fmlab.data import load

    device = current_device()
    runs = [open_run(d, device) for d in run_dirs]
    data = data if data is not None else load(data_dir)
    for run in runs:
        attach_predictions(run, data, device)
    names = unique_names([r.run_dir for r in runs])
    evaluated = [_evaluate(run, data, device, seed, timing_s, figures) for run in runs]

    labels = data.y_test
    base = explain.pick_per_class(labels, per_class, seed)
    extra = explain.pick_disagreements([r.probs.argmax(axis=1) for r in runs], disagreements, seed, base) \
        if len(runs) > 1 else np.zeros(0, np.int64)
    idx = np.concatenate([base, extra])
    columns, models_summary = [], {}
    for name, run, (result, _) in zip(names, runs, evaluated, strict=True):
        method = explain.PRIMARY.get(run.family, "integrated_gradients")
        maps, probs, faith = _attributions(run, data.x_test[idx], device, (method,), seed)
        columns.append(explain.Column(f"{name}\n{explain.LABELS[method]}", maps[method],
                                      explain.captions(probs, CLASS_NAMES), probs.argmax(axis=1) == labels[idx]))
        models_summary[name] = {
            "run": str(run.run_dir), "model": run.model_name, "method": method, "faithfulness": faith[method],
            "predictions": [{"index": int(i), "pred": CLASS_NAMES[int(p.argmax())], "confidence": float(p.max())}
                            for i, p in zip(idx, probs, strict=True)],
            **{k: result[k] for k in ("accuracy", "top2_accuracy", "log_loss", "ece")},
            "macro_f1": result["averages"]["macro"]["f1"], "roc_auc_macro": result["roc_auc"]["macro"],
            **{k: result["complexity"][k] for k in ("params", "macs_per_image", "throughput_images_per_s",
                                                     "latency_ms")},
        }
    rows = _row_labels(base, labels) + _row_labels(extra, labels, "disagree ")
    figure = explain.heatmap_grid(
        data.x_test[idx], columns, rows,
        "Attribution for each model's prediction\n(prediction and confidence below; red: wrong)",
    )
    out = Path(out_dir)
    for name, (result, artifacts) in zip(names, evaluated, strict=True):
        _write(out / name, result, artifacts)
    summary = {"runs": names, "images": {"per_class": base.tolist(), "disagreements": extra.tolist()},
               "seed": seed, "models": models_summary}
    plots.save(figure, out / "comparison.png")
    write_json(out / "comparison.json", summary)
    return {**summary, "out_dir": str(out)}

