"""The fit loop: epochs over in-memory batches, validation, best checkpoint, early stopping, resume."""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits

from fmlab import models
from fmlab.config import TrainConfig
from fmlab.data import FashionMNIST, load, make_split
from fmlab.data.augment import augment
from fmlab.errors import FmlabError, Interrupted
from fmlab.io import atomic_path, write_json, write_text
from fmlab.train import checkpoint
from fmlab.train.learners import NumpyLearner, TorchLearner
from fmlab.train.progress import Reporter

HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")
EVAL_BATCH = 1024
Callback = Callable[[int, dict[str, float]], None]


@dataclass
class RunResult:
    status: str  # "finished", "early_stopped" or "diverged"
    history: list[dict[str, float]]
    best_epoch: int
    best_val_acc: float
    train_time_s: float
    metrics: dict[str, Any] = field(default_factory=dict)
    learner: Any = None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise FmlabError("--device cuda requested but no CUDA GPU is available; use --device cpu or auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise FmlabError("--device mps requested but MPS is not available; use --device cpu or auto")
    return torch.device(name)


class Arrays:
    """Train/val/test images as uint8 (N, 1, 28, 28) tensors on the device, labels as int64."""

    def __init__(self, data: FashionMNIST, cfg: TrainConfig, device: torch.device) -> None:
        split = make_split(data, cfg.val_size, cfg.split_seed, cfg.train_size)
        self.mean, self.std, self.device = split.mean, split.std, device

        def put(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.from_numpy(x.copy()).unsqueeze(1).to(device), torch.from_numpy(y.copy()).to(device)

        self.train = put(data.x_train[split.train_idx], data.y_train[split.train_idx])
        self.val = put(data.x_train[split.val_idx], data.y_train[split.val_idx])
        self.test = put(data.x_test, data.y_test)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() / 255.0 - self.mean) / self.std


def predict_logits(learner: Any, arrays: Arrays, x: torch.Tensor, tta_flip: bool = False) -> torch.Tensor:
    """Logits for uint8 images in batches; with tta_flip the log-probs of image and mirror are averaged."""
    out = []
    for start in range(0, len(x), EVAL_BATCH):
        xb = arrays.normalise(x[start : start + EVAL_BATCH])
        logits = learner.logits(xb)
        if tta_flip:
            logits = (logits.log_softmax(1) + learner.logits(xb.flip(-1)).log_softmax(1)) / 2
        out.append(logits.cpu())
    return torch.cat(out)


def score(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    y = y.cpu()
    return float(F.cross_entropy(logits, y)), float((logits.argmax(1) == y).float().mean())


def _history_csv(history: list[dict[str, float]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return buf.getvalue()


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (2**63)


def build_learner(cfg: TrainConfig, device: torch.device, steps_per_epoch: int) -> tuple[Any, dict[str, Any]]:
    """The learner for cfg.model and the fully resolved model arguments."""
    spec = models.get(cfg.model)
    model_args = {**spec.defaults, **cfg.model_kwargs()}
    torch.manual_seed(cfg.seed)
    if spec.numpy:
        if device.type != "cpu":
            raise FmlabError(f"'{cfg.model}' is the NumPy model and runs on the CPU only; use --device cpu")
        return NumpyLearner(model_args, cfg, steps_per_epoch), model_args
    model = models.build(cfg.model, **model_args)
    return TorchLearner(model, cfg, device, steps_per_epoch), model_args


def fit(
    cfg: TrainConfig,
    out_dir: str | Path | None = None,
    *,
    data: FashionMNIST | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    progress: bool | None = None,
    evaluate_test: bool = True,
) -> RunResult:
    """Train cfg.model; with out_dir, write config, history, checkpoints, predictions and metrics there."""
    out = Path(out_dir) if out_dir is not None else None
    device = resolve_device(cfg.device)
    arrays = Arrays(data if data is not None else load(), cfg, device)
    n_train = len(arrays.train[1])
    steps = math.ceil(n_train / cfg.batch_size)
    learner, model_args = build_learner(cfg, device, steps)
    resolved = {**cfg.model_dump(), "model_args": model_args, "device": str(device)}
    norm = (arrays.mean, arrays.std)

    history: list[dict[str, float]] = []
    best = {"epoch": 0, "val_acc": -1.0, "monitor": -math.inf, "weights": learner.weights(), "stale": 0}
    last_path = out / "last.pt" if out else None
    if resume:
        if last_path is None or not last_path.is_file():
            raise FmlabError(f"nothing to resume in {out}: no last.pt (the run finished or never started)")
        state = checkpoint.read(last_path)
        learner.load_state(state["learner"])
        history, best = state["history"], state["best"]
    elif out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", resolved)

    status, t_train = "finished", sum(h["seconds"] for h in history)
    reporter = Reporter(cfg.epochs, steps, enabled=progress)
    # OpenBLAS threads spin against torch's OpenMP threads on these small matmuls: one BLAS thread
    # trains the NumPy model 3x faster on 2 cores (and makes its numbers independent of the core count).
    blas = threadpool_limits(1, user_api="blas") if isinstance(learner, NumpyLearner) else None
    try:
        for epoch in range(len(history) + 1, cfg.epochs + 1):
            seed = _epoch_seed(cfg.seed, epoch)
            gen = torch.Generator().manual_seed(seed)
            torch.manual_seed(seed)
            if hasattr(learner, "reseed"):
                learner.reseed(seed)
            t0 = time.perf_counter()
            loss_sum, correct, seen = 0.0, 0, 0
            reporter.start_epoch(epoch)
            for idx in torch.randperm(n_train, generator=gen).split(cfg.batch_size):
                xb, yb = arrays.train[0][idx.to(device)], arrays.train[1][idx.to(device)]
                if cfg.augment:
                    xb = augment(xb, gen, flip=cfg.flip, crop=cfg.crop, degrees=cfg.rotate)
                loss, ok = learner.train_batch(arrays.normalise(xb), yb)
                if not math.isfinite(loss):
                    status = "diverged"
                    break
                loss_sum, correct, seen = loss_sum + loss * len(idx), correct + ok, seen + len(idx)
                reporter.batch(loss, correct / seen, seen / (time.perf_counter() - t0))
            if status == "diverged":
                break
            train_seconds = time.perf_counter() - t0
            t_train += train_seconds
            val_loss, val_acc = score(predict_logits(learner, arrays, arrays.val[0], cfg.tta_flip), arrays.val[1])
            record = {
                "epoch": epoch, "train_loss": loss_sum / seen, "train_acc": correct / seen,
                "val_loss": val_loss, "val_acc": val_acc, "lr": learner.schedule.lr, "seconds": train_seconds,
            }
            history.append(record)
            learner.schedule.after_epoch(val_acc)
            monitor = val_acc if cfg.monitor == "val_acc" else -val_loss
            if monitor > best["monitor"]:
                best.update(stale=0, monitor=monitor)
            else:
                best["stale"] += 1
            if val_acc > best["val_acc"]:
                best.update(epoch=epoch, val_acc=val_acc, weights=learner.weights())
            reporter.end_epoch(record)
            if out is not None:
                write_text(out / "history.csv", _history_csv(history))
                checkpoint.save(last_path, {"format": checkpoint.FORMAT_VERSION, "state_dict": {},
                                            "learner": learner.state(), "history": history, "best": best})
            for callback in callbacks:
                callback(epoch, record)
            if cfg.early_stopping and best["stale"] >= cfg.early_stopping:
                status = "early_stopped"
                break
    except KeyboardInterrupt:
        reporter.close()
        done = len(history)
        raise Interrupted(
            f"interrupted during epoch {done + 1}; {done} epoch(s) saved"
            + (f", continue with: fmlab train --resume --out {out}" if out else "")
        ) from None
    finally:
        if blas is not None:
            blas.restore_original_limits()
    reporter.close()

    learner.load_weights(best["weights"])
    module = models.build(cfg.model, **model_args)
    module.load_state_dict(best["weights"])
    result = RunResult(status, history, best["epoch"], best["val_acc"], t_train, learner=learner)
    result.metrics = {
        "status": status, "model": cfg.model, "seed": cfg.seed, "epochs_run": len(history),
        "best_epoch": best["epoch"], "best_val_acc": best["val_acc"], "train_time_s": t_train,
        "params": models.count_parameters(module), "device": str(device),
    }
    if evaluate_test:
        logits = predict_logits(learner, arrays, arrays.test[0], cfg.tta_flip)
        result.metrics["test_loss"], result.metrics["test_acc"] = score(logits, arrays.test[1])
        if out is not None:
            _write_predictions(out / "predictions.npz", logits, arrays.test[1].cpu())
    if out is not None:
        checkpoint.save(out / "checkpoint.pt", checkpoint.model_payload(module, cfg.model, model_args, resolved, norm))
        write_json(out / "metrics.json", result.metrics)
        last_path.unlink(missing_ok=True)
    return result


def _write_predictions(path: Path, logits: torch.Tensor, labels: torch.Tensor) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(
            fh, logits=logits.numpy().astype(np.float32), probs=logits.softmax(1).numpy().astype(np.float32),
            labels=labels.numpy().astype(np.int64),
        )
