"""`fit`: train a resolved spec on the data set's split into a run folder (or nowhere), then score the
saved predictor once on the test set. Every file goes through fmlab.runs.RunDir."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fmlab import hardware, models
from fmlab.config import TrainConfig
from fmlab.data import FashionMNIST, load, make_split
from fmlab.errors import Interrupted
from fmlab.runs import Predictor, RunDir, RunDirError, require_resolved, run_key
from fmlab.training.loop import Callback, Fitted, resolve_device, score, torch_threads, train


@dataclass
class RunResult:
    status: str  # "finished", "early_stopped" or "diverged"
    history: list[dict[str, float]]
    best_epoch: int
    best_val_acc: float | None
    train_time_s: float
    predictor: Predictor
    key: str
    metrics: dict[str, Any] = field(default_factory=dict)


def split_arrays(data: FashionMNIST, spec: TrainConfig, device: torch.device) -> tuple[Any, Any, tuple[float, float]]:
    """(train, val) uint8 image / label tensors on `device`, and the train split's pixel mean and std."""
    split = make_split(data, spec.val_size, spec.split_seed, spec.train_size)

    def put(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = torch.from_numpy(data.x_train[idx]).unsqueeze(1), torch.from_numpy(data.y_train[idx])
        return x.to(device), y.to(device)

    return put(split.train_idx), put(split.val_idx), (split.mean, split.std)


def fit(
    spec: TrainConfig,
    out: RunDir | str | Path | None = None,
    *,
    data: FashionMNIST | None = None,
    device: str | torch.device = "auto",
    resume: bool = False,
    force: bool = False,
    callbacks: Sequence[Callback] = (),
    progress: bool | None = None,
) -> RunResult:
    """Train `spec` (from fmlab.runs.resolve). With `out`, the run folder gets the spec first, history and
    resume state each epoch, then the predictor, its test predictions and the metrics; `resume` continues
    the interrupted run of the same spec there, `force` replaces another run."""
    require_resolved(spec)
    run = RunDir(out) if out is not None and not isinstance(out, RunDir) else out
    data = data if data is not None else load()
    key = run_key(spec, data.checksums)
    dev = resolve_device(device, spec.model)
    state = None
    if run is not None and resume:
        if not run.has_state():
            raise RunDirError(f"nothing to resume in {run}: no saved epochs (the run finished or never started)")
        saved, saved_key = run.read_spec()
        if saved_key != key or saved != spec:
            raise RunDirError(f"{run} holds a run of other settings or data; start afresh with --force")
        state = run.read_state(key)
    elif run is not None:
        run.start(spec, key, force=force)
    train_set, val_set, norm = split_arrays(data, spec, dev)

    def save_state(state: dict[str, Any]) -> None:
        run.write_history(state["history"])
        run.save_state(state, key)

    try:
        fitted = train(spec, train_set, val_set, norm, dev, state=state, callbacks=callbacks, progress=progress,
                       save_state=save_state if run is not None else None)
    except Interrupted as exc:
        hint = f", continue with: fmlab train --resume --out {run}" if run else ""
        raise Interrupted(f"{exc}{hint}", exc.signum) from None
    return _finish(spec, fitted, run, key, data, dev)


def _finish(spec: TrainConfig, fitted: Fitted, run: RunDir | None, key: str, data: FashionMNIST,
            device: torch.device) -> RunResult:
    """Save the predictor, score the saved predictor once on the test set, write predictions and metrics."""
    predictor = fitted.predictor
    if run is not None:
        run.save_predictor(predictor, key)
        predictor = run.read_predictor().to(device)  # score exactly what predict and export will load
    with torch_threads(spec.threads):
        logits = predictor.logits(data.x_test)
    test_loss, test_acc = score(logits, torch.from_numpy(data.y_test))
    metrics = {
        "key": key, "status": fitted.status, "model": spec.model, "seed": spec.seed,
        "epochs_run": len(fitted.history), "best_epoch": fitted.best_epoch, "best_val_acc": fitted.best_val_acc,
        "train_time_s": fitted.train_time_s, "params": models.count_parameters(predictor.net),
        "device": str(device), "precision": spec.precision, "threads": spec.threads, "machine": hardware.describe(),
        "test_loss": test_loss, "test_acc": test_acc,
    }
    if run is not None:
        if not fitted.history:
            run.write_history([])
        run.save_predictions(logits.numpy(), data.x_test, data.y_test, key, predictor.digest())
        run.save_metrics(metrics)
        run.drop_state()
    return RunResult(fitted.status, fitted.history, fitted.best_epoch, fitted.best_val_acc, fitted.train_time_s,
                     predictor, key, metrics)
