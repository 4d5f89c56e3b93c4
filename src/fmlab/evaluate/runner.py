"""Evaluate finished runs: metrics, report, figures, attributions, complexity; compare several side by side.

A run is scored through its predictor (fmlab.runs.Predictor): the test predictions it recorded after
training when they were made by the weights in its checkpoint on this test set, else the predictor on
the test images. Every input is read and every figure built before the first file is written, so bad
input (an unfinished, damaged or foreign run) leaves no partial output behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fmlab import models
from fmlab.data import CLASS_NAMES, FashionMNIST
from fmlab.errors import OutputError
from fmlab.evaluate import complexity, explain, plots
from fmlab.evaluate import metrics as M
from fmlab.runs import ComparisonDir, EvalDir, Predictor, RunDir, images_digest


@dataclass
class Run:
    """A finished run: its folder, predictor, training record and test-set probabilities."""

    run: RunDir
    key: str
    predictor: Predictor
    metrics: dict[str, Any]
    history: list[dict[str, float]]
    probs: np.ndarray
    source: str  # where the probabilities came from: "recorded" (after training) or "predictor"

    @property
    def name(self) -> str:
        return self.predictor.spec.model

    @property
    def baseline(self) -> float:
        """A black pixel in the network's normalised input space."""
        return float(self.predictor.normalise(np.zeros((1, 28, 28), np.uint8)).flatten()[0])


def current_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("mps" if torch.backends.mps.is_available() else "cpu")


def open_run(run_dir: str | Path | RunDir, data: FashionMNIST, device: torch.device) -> Run:
    """A finished run folder (checked: complete, consistent), scored on `data`'s test set."""
    run = (run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)).finished()
    _, key = run.read_spec()
    predictor = run.read_predictor().to(device)
    recorded = run.read_predictions()
    if recorded.images == images_digest(data.x_test, data.y_test):
        probs, source = recorded.probs, "recorded"
    else:  # another test set than training's: score the predictor on it
        probs, source = predictor.probs(data.x_test), "predictor"
    return Run(run, key, predictor, run.read_metrics(), run.read_history(), probs, source)


def _attributions(run: Run, images: np.ndarray, methods: Sequence[str], seed: int = 0
                  ) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, dict[str, float]]]:
    """Maps per method for each image's predicted class, the predictor's probabilities, and faithfulness."""
    net, x = run.predictor.net.eval(), run.predictor.normalise(images)
    probs = run.predictor.probs(images)
    target = torch.as_tensor(probs.argmax(axis=1), device=x.device)
    layer = models.target_layer(net, run.name)
    maps, faith = {}, {}
    random_map = explain.random_attribution((len(x), *x.shape[-2:]), seed).to(x.device)
    reference = explain.faithfulness(net, x, random_map, target, run.baseline, seed=seed)
    for method in methods:
        attr = explain.attribute(net, x, target, method, layer, run.baseline)
        maps[method] = attr.cpu().numpy()
        faith[method] = explain.faithfulness(net, x, attr, target, run.baseline, seed=seed)
        faith[method]["deletion_auc_random"] = reference["deletion_auc"]
        faith[method]["insertion_auc_random"] = reference["insertion_auc"]
    return maps, probs, faith


def _row_labels(idx: np.ndarray, labels: np.ndarray, prefix: str = "") -> list[str]:
    return [f"{prefix}#{i}\ntrue {CLASS_NAMES[labels[i]]}" for i in idx]


@dataclass
class Evaluation:
    result: dict[str, Any]  # the evaluation's numbers
    figures: dict[str, bytes]  # name -> PNG
    texts: dict[str, str]  # name -> text


def _evaluate(run: Run, data: FashionMNIST, device: torch.device, seed: int, timing_s: float,
              figures: bool = True) -> Evaluation:
    """The numbers, the text report and (with `figures`) the figures of one run; nothing written yet."""
    labels, probs = data.y_test, run.probs
    title = f"{run.name} ({run.run.path.name})"
    result = M.compute(labels, probs, CLASS_NAMES)
    ece = M.expected_calibration_error(labels, probs)
    result["complexity"] = complexity.profile(run.predictor.module, device, run.run.checkpoint, min_seconds=timing_s)
    result["training"] = {k: run.metrics.get(k) for k in
                          ("status", "train_time_s", "epochs_run", "best_epoch", "best_val_acc")}
    texts = {"classification_report": M.classification_report(labels, probs, CLASS_NAMES)}
    pictures = _figures(run, data, seed, result, ece, title) if figures else {}
    result = {"key": run.key, "run": str(run.run.path), "model": run.name, "family": run.predictor.family,
              "predictions_source": run.source, **result}
    return Evaluation(result, pictures, texts)


def _figures(run: Run, data: FashionMNIST, seed: int, result: dict[str, Any], ece: dict[str, Any],
             title: str) -> dict[str, bytes]:
    """The per-run figures; also records the attribution faithfulness scores in `result`."""
    labels, probs = data.y_test, run.probs
    idx = explain.pick_per_class(labels, 1, seed)
    methods = explain.methods_for(run.predictor.family)
    maps, sample_probs, faith = _attributions(run, data.x_test[idx], methods, seed)
    result["faithfulness"] = faith
    figures = {
        "confusion_matrix": plots.confusion_figure(result["confusion_matrix"], CLASS_NAMES, title),
        "roc": plots.roc_figure(labels, probs, CLASS_NAMES, result["roc_auc"], title),
        "reliability": plots.reliability_figure(ece["bins"], ece["ece"], title),
        "mistakes": plots.mistakes_figure(
            data.x_test, labels, probs, CLASS_NAMES, M.top_confusions(result["confusion_matrix"], 4), 6,
            f"{title}: most confident mistakes for the top confusions"),
        "attributions": explain.heatmap_grid(
            data.x_test[idx],
            [explain.Column(explain.LABELS[m], maps[m], explain.captions(sample_probs, CLASS_NAMES),
                            sample_probs.argmax(axis=1) == labels[idx]) for m in methods],
            _row_labels(idx, labels), f"{title}: attributions for the predicted class (red: wrong)"),
    }
    if run.history:
        figures["training_curves"] = plots.curves_figure(run.history, title)
    return {name: plots.png(fig) for name, fig in figures.items()}


def _write(out: EvalDir, evaluation: Evaluation) -> dict[str, Any]:
    return out.write(evaluation.result, evaluation.figures, evaluation.texts)


def _output_folder(path: str | Path) -> Path:
    """A folder for evaluation outputs, checked before any work: not a run folder, not a file."""
    path = Path(path)
    if RunDir(path).holds_run():
        raise OutputError(f"{path} is a run folder; evaluation outputs go to a folder of their own (--out)")
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path} is a file; evaluation outputs go to a folder (--out)")
    return path


def evaluate_run(
    run_dir: str | Path | RunDir, out_dir: str | Path | None = None, data: FashionMNIST | None = None,
    *, data_dir: str | Path | None = None, seed: int = 0, timing_s: float = 0.5, figures: bool = True,
) -> dict[str, Any]:
    """Evaluate one finished run on the test split; write the numbers, the text report and (with `figures`) the
    figures to out_dir (default: the run's eval folder). Returns the numbers written plus "out_dir"."""
    from fmlab.data import load

    device = current_device()
    run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    out = run_dir.eval if out_dir is None else EvalDir(_output_folder(out_dir))
    run_dir.finished()  # a bad run fails here, before the data is read
    data = data if data is not None else load(data_dir)
    evaluation = _evaluate(open_run(run_dir, data, device), data, device, seed, timing_s, figures)
    return {**_write(out, evaluation), "out_dir": str(out.path)}


def unique_names(run_dirs: Sequence[Path]) -> list[str]:
    """Short distinct folder names for runs: the last path part, more parts when two collide."""
    parts = [Path(p).resolve().parts for p in run_dirs]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["-".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [f"{i}-{Path(p).name}" for i, p in enumerate(run_dirs)]


def compare_runs(
    run_dirs: Sequence[str | Path | RunDir], out_dir: str | Path, data: FashionMNIST | None = None,
    *, data_dir: str | Path | None = None, seed: int = 0, per_class: int = 1, disagreements: int = 6,
    timing_s: float = 0.5, figures: bool = True,
) -> dict[str, Any]:
    """Evaluate every run into OUT/<run name>/ (figures optional) and write the side-by-side comparison
    view (Input | model A heatmap | model B heatmap | ...) with its numbers."""
    from fmlab.data import load

    device = current_device()
    dirs = [d if isinstance(d, RunDir) else RunDir(d) for d in run_dirs]
    out = ComparisonDir(_output_folder(out_dir))
    for run_dir in dirs:
        run_dir.finished()
    data = data if data is not None else load(data_dir)
    runs = [open_run(d, data, device) for d in dirs]
    names = unique_names([r.run.path for r in runs])
    evaluated = [_evaluate(run, data, device, seed, timing_s, figures) for run in runs]

    labels = data.y_test
    base = explain.pick_per_class(labels, per_class, seed)
    extra = explain.pick_disagreements([r.probs.argmax(axis=1) for r in runs], disagreements, seed, base) \
        if len(runs) > 1 else np.zeros(0, np.int64)
    idx = np.concatenate([base, extra])
    columns, models_summary = [], {}
    for name, run, evaluation in zip(names, runs, evaluated, strict=True):
        method = explain.PRIMARY.get(run.predictor.family, "integrated_gradients")
        maps, probs, faith = _attributions(run, data.x_test[idx], (method,), seed)
        columns.append(explain.Column(f"{name}\n{explain.LABELS[method]}", maps[method],
                                      explain.captions(probs, CLASS_NAMES), probs.argmax(axis=1) == labels[idx]))
        result = evaluation.result
        models_summary[name] = {
            "run": str(run.run.path), "model": run.name, "method": method, "faithfulness": faith[method],
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
    for name, evaluation in zip(names, evaluated, strict=True):
        _write(out.run(name), evaluation)
    summary = {"runs": names, "images": {"per_class": base.tolist(), "disagreements": extra.tolist()},
               "seed": seed, "models": models_summary}
    out.write(summary, plots.png(figure))
    return {**summary, "out_dir": str(out.path)}
