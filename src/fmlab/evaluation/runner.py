"""Evaluate finished runs: metrics, calibration, report, figures, complexity, and (on request) the checked
explanation of each model.

A run is scored through its predictor (fmlab.runs.Predictor): the test predictions it recorded after
training when they were made by the weights in its checkpoint on this test set, else the predictor on
the test images. Every input is read and every figure built before the first file is written, so bad
input (an unfinished, damaged or foreign run) leaves no partial output behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fmlab.config import TrainConfig
from fmlab.data import CLASS_NAMES, FashionMNIST, make_split
from fmlab.errors import ConfigError, OutputError
from fmlab.evaluation import calibration, complexity, explain, plots, trust
from fmlab.evaluation import metrics as M
from fmlab.runs import EvalDir, Predictor, RunDir, images_digest

SELECT_PER_CLASS = 10  # validation images per class on which a CNN's explainer is chosen
REPORT_PER_CLASS = 20  # test images per class on which the chosen explainer is checked


@dataclass
class Run:
    """A finished run: its folder, spec, predictor, training record and test-set probabilities."""

    run: RunDir
    spec: TrainConfig
    key: str
    predictor: Predictor
    metrics: dict[str, Any]
    history: list[dict[str, float]]
    probs: np.ndarray
    source: str  # where the probabilities came from: "recorded" (after training) or "predictor"

    @property
    def name(self) -> str:
        return self.spec.model

    @property
    def baseline(self) -> float:
        """A black pixel in the network's normalised input space (deletion adds no signal)."""
        return float(self.predictor.normalise(np.zeros((1, 28, 28), np.uint8)).flatten()[0])

    def validation(self, data: FashionMNIST) -> tuple[np.ndarray, np.ndarray] | None:
        """The run's own validation images and labels, or None when `data` cannot be split the same way."""
        try:
            split = make_split(data, self.spec.val_size, self.spec.split_seed, self.spec.train_size)
        except ConfigError:
            return None
        return data.x_train[split.val_idx], data.y_train[split.val_idx]


def current_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("mps" if torch.backends.mps.is_available() else "cpu")


def open_run(run_dir: str | Path | RunDir, data: FashionMNIST, device: torch.device) -> Run:
    """A finished run folder (checked: complete, consistent), scored on `data`'s test set."""
    run = (run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)).finished()
    spec, key = run.read_spec()
    predictor = run.read_predictor().to(device)
    recorded = run.read_predictions()
    if recorded.images == images_digest(data.x_test, data.y_test):
        probs, source = recorded.probs, "recorded"
    else:  # another test set than training's: score the predictor on it
        probs, source = predictor.probs(data.x_test), "predictor"
    return Run(run, spec, key, predictor, run.read_metrics(), run.read_history(), probs, source)


def calibrate(run: Run, data: FashionMNIST, labels: np.ndarray) -> dict[str, Any]:
    """Temperature scaling fitted on the run's validation split (never the test set); test ECE and NLL
    before and after."""
    val = run.validation(data)
    if val is None:
        return {"temperature": None, "note": "the data given cannot be split like the run's: no validation split"}
    scores = run.predictor.logits(val[0]).numpy()
    t = calibration.fit_temperature(scores, val[1])
    test_scores = np.log(np.clip(run.probs, 1e-12, None))  # log-probabilities: softmax(log p / T) = scaled p
    after = calibration.scaled_probs(test_scores, t)
    return {"temperature": t, "val_nll_before": calibration.nll(scores, val[1]),
            "val_nll_after": calibration.nll(scores, val[1], t),
            "test_nll_before": calibration.nll(test_scores, labels),
            "test_nll_after": calibration.nll(test_scores, labels, t),
            "ece_before": M.expected_calibration_error(labels, run.probs)["ece"],
            "ece_after": M.expected_calibration_error(labels, after)["ece"], "probs_after": after}


def explanation(run: Run, data: FashionMNIST, seed: int = 0) -> tuple[trust.Analysis, np.ndarray]:
    """The explainer chosen for this run by measurement (on its validation images), checked on a stratified
    sample of test images; returns the analysis and the indices of those test images."""
    net, predictor = run.predictor.net.eval(), run.predictor
    val = run.validation(data)
    pool = val if val is not None else (data.x_test, data.y_test)
    pick = explain.pick_per_class(pool[1], SELECT_PER_CLASS, seed)
    report = explain.pick_per_class(data.y_test, REPORT_PER_CLASS, seed + 1)

    def inputs(images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = predictor.normalise(images)
        return x, torch.as_tensor(predictor.logits(images).argmax(1).numpy(), device=x.device)

    analysis = trust.analyse(net, run.name, run.baseline, inputs(pool[0][pick]), inputs(data.x_test[report]), seed)
    return analysis, report


def row_labels(idx: np.ndarray, labels: np.ndarray, prefix: str = "") -> list[str]:
    return [f"{prefix}#{i}\ntrue {CLASS_NAMES[labels[i]]}" for i in idx]


@dataclass
class Evaluation:
    result: dict[str, Any]  # the evaluation's numbers
    figures: dict[str, bytes]  # name -> PNG
    texts: dict[str, str]  # name -> text
    vectors: dict[str, bytes]  # name -> PDF of the same figure


def evaluate_numbers(run: Run, data: FashionMNIST, device: torch.device, seed: int, timing_s: float,
                     figures: bool = True, explain_it: bool = False) -> Evaluation:
    """The numbers, the text report and (with `figures`) the figures of one run; nothing written yet. With
    `explain_it`, the explainer is chosen and checked (fmlab.evaluation.trust) and its maps drawn."""
    labels, probs = data.y_test, run.probs
    title = f"{run.name} ({run.run.path.name})"
    result = M.compute(labels, probs, CLASS_NAMES)
    calibrated = calibrate(run, data, labels)
    after = calibrated.pop("probs_after", None)
    result["calibration"] = calibrated
    result["complexity"] = complexity.profile(run.predictor.module, device, run.run.checkpoint, min_seconds=timing_s)
    result["training"] = {k: run.metrics.get(k) for k in
                          ("status", "train_time_s", "epochs_run", "best_epoch", "best_val_acc")}
    texts = {"classification_report": M.classification_report(labels, probs, CLASS_NAMES)}
    pictures: dict[str, Any] = {}
    if figures:
        panels = [("as trained", M.expected_calibration_error(labels, probs)["bins"], result["ece"])]
        if after is not None:
            panels.append((f"temperature {calibrated['temperature']:.2f} (fitted on validation)",
                           M.expected_calibration_error(labels, after)["bins"], calibrated["ece_after"]))
        pictures = {
            "confusion_matrix": plots.confusion_figure(result["confusion_matrix"], CLASS_NAMES, title),
            "roc": plots.roc_figure(labels, probs, CLASS_NAMES, result["roc_auc"], title),
            "reliability": plots.reliability_figure(panels, title),
            "mistakes": plots.mistakes_figure(
                data.x_test, labels, probs, CLASS_NAMES, M.top_confusions(result["confusion_matrix"], 4), 6,
                f"{title}: most confident mistakes for the top confusions"),
        }
        if run.history:
            pictures["training_curves"] = plots.curves_figure(run.history, title)
    if explain_it:
        analysis, report = explanation(run, data, seed)
        result["explanation"] = analysis.summary()
        shown = np.arange(0, len(report), REPORT_PER_CLASS)  # one test image per class
        show = report[shown]
        sample_probs = run.predictor.probs(data.x_test[show])
        pictures["attributions"] = explain.heatmap_grid(
            data.x_test[show], [explain.Column(analysis.explainer.label, analysis.maps[shown],
                                               explain.captions(sample_probs, CLASS_NAMES),
                                               sample_probs.argmax(axis=1) == labels[show])],
            row_labels(show, labels), f"{title}: {analysis.verdict()}")
    result = {"key": run.key, "run": str(run.run.path), "model": run.name, "family": run.predictor.family,
              "predictions_source": run.source, **result}
    return Evaluation(result, {name: plots.png(fig) for name, fig in pictures.items()}, texts,
                      {name: plots.pdf(fig) for name, fig in pictures.items()})


def write_evaluation(out: EvalDir, evaluation: Evaluation) -> dict[str, Any]:
    return out.write(evaluation.result, evaluation.figures, evaluation.texts, evaluation.vectors)


def output_folder(path: str | Path) -> Path:
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
    explain_it: bool = False,
) -> dict[str, Any]:
    """Evaluate one finished run on the test split; write the numbers, the text report and (with `figures`) the
    figures to out_dir (default: the run's eval folder); `explain_it` adds the checked explanation. Returns
    the numbers written plus "out_dir"."""
    from fmlab.data import load

    device = current_device()
    run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    out = run_dir.eval if out_dir is None else EvalDir(output_folder(out_dir))
    run_dir.finished()  # a bad run fails here, before the data is read
    data = data if data is not None else load(data_dir)
    evaluation = evaluate_numbers(open_run(run_dir, data, device), data, device, seed, timing_s, figures, explain_it)
    return {**write_evaluation(out, evaluation), "out_dir": str(out.path)}
