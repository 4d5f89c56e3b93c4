"""Checkpoints: plain tensors and primitives, loaded with weights_only=True so a file can never run code."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fmlab.errors import FmlabError
from fmlab.io import atomic_path

FORMAT_VERSION = 1
NUM_CLASSES = 10


class CheckpointError(FmlabError):
    """A checkpoint is missing, corrupt, unsafe or does not fit its model."""


def save(path: str | Path, payload: dict[str, Any]) -> None:
    """Atomically write `payload` (tensors, dicts, lists, str, numbers) to `path`."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def read(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file without executing any code it might carry."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; train a model first (fmlab train --out DIR)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 144": the error below says it all
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _first_line(exc) if "weights_only" not in str(exc) else "it holds non-tensor objects"
        raise CheckpointError(f"{path}: refused to load, {reason}; only fmlab checkpoints are accepted") from None
    except Exception as exc:  # on corrupt bytes torch raises RuntimeError, EOFError, IndexError, struct.error, ...
        raise CheckpointError(f"{path}: corrupt checkpoint ({_first_line(exc)})") from None
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise CheckpointError(f"{path}: not an fmlab checkpoint")
    version = payload.get("format", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {version} is newer than this fmlab ({FORMAT_VERSION}); upgrade fmlab"
        )
    if payload.get("num_classes", NUM_CLASSES) != NUM_CLASSES:
        raise CheckpointError(f"{path}: model has {payload.get('num_classes')} classes, Fashion-MNIST has 10")
    return payload


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:160]}" if text else type(exc).__name__


def model_payload(
    model: nn.Module, name: str, model_args: dict[str, Any], config: dict[str, Any], norm: tuple[float, float]
) -> dict[str, Any]:
    """The checkpoint of a model: what it is, how it was trained, how inputs are normalised, its weights."""
    return {
        "format": FORMAT_VERSION,
        "model": name,
        "model_args": model_args,
        "num_classes": NUM_CLASSES,
        "config": config,
        "norm": {"mean": float(norm[0]), "std": float(norm[1])},
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }


def load_model(path: str | Path, expect_model: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint (file or run directory) was saved from, in eval mode."""
    from fmlab import models

    payload = read(path)
    name = payload.get("model")
    if expect_model is not None and name != expect_model:
        raise CheckpointError(f"{path}: checkpoint holds a '{name}' model, the run says '{expect_model}'")
    model = models.build(str(name), **payload.get("model_args", {}))
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except (RuntimeError, KeyError, TypeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: weights do not fit a '{name}' model ({first})") from None
    return model.eval(), payload
