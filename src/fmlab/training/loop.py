"""The training engine: epochs over in-memory batches, validation through the predictor, best weights,
early stopping and resumable state. It knows no files: `fit` (train/fit.py) runs it into a run folder,
the scikit-learn estimator (tune/estimator.py) on the arrays a search hands it, and Optuna per trial.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits

from fmlab import models
from fmlab.config import TrainConfig
from fmlab.data.augment import augment
from fmlab.errors import ConfigError, FmlabError, Interrupted
from fmlab.runs.predictor import Predictor
from fmlab.runs.spec import require_resolved
from fmlab.training.learners import NumpyLearner, TorchLearner
from fmlab.training.progress import Reporter

Callback = Callable[[int, dict[str, float]], None]
Arrays = tuple[torch.Tensor, torch.Tensor]  # uint8 images (N, 1, 28, 28) and int64 labels, on the device


@dataclass
class Fitted:
    status: str  # "finished", "early_stopped" or "diverged"
    history: list[dict[str, float]]
    best_epoch: int  # the epoch whose weights `predictor` holds
    best_val_acc: float | None  # None when trained without a validation split
    train_time_s: float
    predictor: Predictor


def resolve_device(name: str | torch.device, model: str | None = None) -> torch.device:
    """Where `model` trains: `auto` is CUDA, else MPS, else the CPU; the NumPy model trains on the CPU only."""
    if model is not None and models.get(model).numpy:
        if str(name) not in ("auto", "cpu"):
            raise FmlabError(f"'{model}' is the NumPy model and runs on the CPU only; use --device cpu or auto")
        return torch.device("cpu")
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise FmlabError("--device cuda requested but no CUDA GPU is available; use --device cpu or auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise FmlabError("--device mps requested but MPS is not available; use --device cpu or auto")
    if name not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unknown device '{name}'; use auto, cpu, cuda or mps")
    return torch.device(name)


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run with `threads` intra-op threads: thread counts change float rounding, so a run sets its own."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (2**63)


def score(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    y = y.cpu()
    return float(F.cross_entropy(logits, y)), float((logits.argmax(1) == y).double().mean())


def build_learner(spec: TrainConfig, device: torch.device, steps_per_epoch: int) -> TorchLearner | NumpyLearner:
    torch.manual_seed(spec.seed)
    if models.get(spec.model).numpy:
        return NumpyLearner(spec, steps_per_epoch)
    return TorchLearner(models.build(spec.model, **spec.model_args), spec, device, steps_per_epoch)


def train(
    spec: TrainConfig,
    train_set: Arrays,
    val_set: Arrays | None,
    norm: tuple[float, float],
    device: torch.device,
    *,
    state: dict[str, Any] | None = None,
    save_state: Callable[[dict[str, Any]], None] | None = None,
    callbacks: Sequence[Callback] = (),
    progress: bool | None = None,
) -> Fitted:
    """Train `spec`'s model on `train_set`; keep the weights of the best validation epoch (the last epoch
    without a validation set). `state` continues an interrupted run; `save_state` receives the resumable
    state after every epoch."""
    require_resolved(spec)
    if val_set is None and (spec.schedule == "plateau" or spec.early_stopping):
        raise ConfigError("the plateau schedule and early stopping need a validation split")
    with torch_threads(spec.threads):
        return _train(spec, train_set, val_set, norm, device, state, save_state, callbacks, progress)


def _train(spec: TrainConfig, train_set: Arrays, val_set: Arrays | None, norm: tuple[float, float],
           device: torch.device, state: dict[str, Any] | None, save_state: Callable[[dict[str, Any]], None] | None,
           callbacks: Sequence[Callback], progress: bool | None) -> Fitted:
    x_train, y_train = train_set
    n_train = len(y_train)
    steps = math.ceil(n_train / spec.batch_size)
    learner = build_learner(spec, device, steps)
    history: list[dict[str, float]] = []
    best = {"epoch": 0, "val_acc": -1.0, "monitor": -math.inf, "weights": learner.weights(), "stale": 0}
    if state is not None:
        try:
            if set(state["best"]) != set(best) or not isinstance(state["history"], list):
                raise ValueError("unexpected layout")
            learner.load_state(state["learner"])
            history, best = state["history"], state["best"]
        except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as exc:
            raise FmlabError(f"the saved training state does not fit this run ({type(exc).__name__}: "
                             f"{str(exc)[:120]}); start afresh with --force") from None
    status, t_train = "finished", sum(h["seconds"] for h in history)
    reporter = Reporter(spec.epochs, steps, enabled=progress)
    # OpenBLAS threads spin against torch's OpenMP threads on these small matmuls: one BLAS thread
    # trains the NumPy model faster on 2 cores (and makes its numbers independent of the core count).
    blas = threadpool_limits(1, user_api="blas") if isinstance(learner, NumpyLearner) else None
    # alternate_flip: a fixed random half of the images is mirrored in odd epochs, the other half in even ones
    halves = (torch.randint(0, 2, (n_train,), generator=torch.Generator().manual_seed(_epoch_seed(spec.seed, 0)))
              if spec.alternate_flip else None)
    try:
        for epoch in range(len(history) + 1, spec.epochs + 1):
            seed = _epoch_seed(spec.seed, epoch)
            gen = torch.Generator().manual_seed(seed)
            torch.manual_seed(seed)
            if isinstance(learner, NumpyLearner):
                learner.reseed(seed)
            t0 = time.perf_counter()
            loss_sum, correct, seen = 0.0, 0, 0
            reporter.start_epoch(epoch)
            for idx in torch.randperm(n_train, generator=gen).split(spec.batch_size):
                flip = spec.flip if halves is None else (halves[idx] + epoch) % 2 == 1
                idx = idx.to(device)
                xb, yb = x_train.index_select(0, idx), y_train.index_select(0, idx)  # copies: in place is safe
                if spec.augment:
                    xb = augment(xb, gen, flip=flip, crop=spec.crop, degrees=spec.rotate, erase=spec.erase)
                # the same arithmetic as (x / 255 - mean) / std, in place: a fresh buffer per operation costs
                # more than the step of a small model (page faults on each new allocation)
                loss, ok = learner.train_batch(xb.float().div_(255.0).sub_(norm[0]).div_(norm[1]), yb)
                if not math.isfinite(loss):
                    status = "diverged"
                    break
                loss_sum, correct, seen = loss_sum + loss * len(idx), correct + ok, seen + len(idx)
                reporter.batch(loss, correct / seen, seen / (time.perf_counter() - t0))
            if status == "diverged":
                break
            record = {"epoch": epoch, "train_loss": loss_sum / seen, "train_acc": correct / seen}
            seconds = time.perf_counter() - t0
            t_train += seconds
            if val_set is not None:
                logits = Predictor(learner.module(), spec, *norm).logits(val_set[0], spec.precision)
                val_loss, val_acc = score(logits, val_set[1])
                record.update(val_loss=val_loss, val_acc=val_acc)
            record.update(lr=learner.schedule.lr, seconds=seconds)
            history.append(record)
            if val_set is None:
                best.update(epoch=epoch, weights=learner.weights())
            else:
                learner.schedule.after_epoch(val_acc)
                monitor = val_acc if spec.monitor == "val_acc" else -val_loss
                if monitor > best["monitor"]:
                    best.update(stale=0, monitor=monitor)
                else:
                    best["stale"] += 1
                if val_acc > best["val_acc"]:
                    best.update(epoch=epoch, val_acc=val_acc, weights=learner.weights())
            reporter.end_epoch(record)
            if save_state is not None:
                save_state({"learner": learner.state(), "history": history, "best": best})
            for callback in callbacks:
                callback(epoch, record)
            if spec.early_stopping and best["stale"] >= spec.early_stopping:
                status = "early_stopped"
                break
    except KeyboardInterrupt as exc:
        reporter.close()
        signum = getattr(exc, "signum", signal.SIGINT)
        raise Interrupted(f"interrupted ({signal.Signals(signum).name}) during epoch {len(history) + 1}; "
                          f"{len(history)} epoch(s) saved", signum) from None
    finally:
        if blas is not None:
            blas.restore_original_limits()
    reporter.close()
    net = models.build(spec.model, **spec.model_args)
    net.load_state_dict(best["weights"])
    predictor = Predictor(net.to(device).eval(), spec, *norm)
    best_val = best["val_acc"] if val_set is not None and best["epoch"] else None
    return Fitted(status, history, best["epoch"], best_val, t_train, predictor)
