"""The checkpoint file format: plain tensors and primitives, loaded with weights_only=True so a file can
never run code. What a checkpoint holds is the predictor's business (fmlab.runs.predictor)."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from fmlab.errors import FmlabError
from fmlab.io import atomic_path

FORMAT_VERSION = 2
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
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; train a model first (fmlab train --out DIR)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 144": the error below says it all
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = first_line(exc) if "weights_only" not in str(exc) else "it holds non-tensor objects"
        raise CheckpointError(f"{path}: refused to load, {reason}; only fmlab checkpoints are accepted") from None
    except Exception as exc:  # on corrupt bytes torch raises RuntimeError, EOFError, IndexError, struct.error, ...
        raise CheckpointError(f"{path}: corrupt checkpoint ({first_line(exc)})") from None
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise CheckpointError(f"{path}: not an fmlab checkpoint")
    version = payload.get("format", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {version} is newer than this fmlab ({FORMAT_VERSION}); upgrade fmlab"
        )
    if version < FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {version} is from an older fmlab; retrain the model")
    if payload.get("num_classes", NUM_CLASSES) != NUM_CLASSES:
        raise CheckpointError(f"{path}: model has {payload.get('num_classes')} classes, Fashion-MNIST has 10")
    return payload


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:160]}" if text else type(exc).__name__
