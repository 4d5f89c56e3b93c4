"""The checkpoint file format: plain tensors and primitives, loaded with weights_only=True so a file can
never run code. What a checkpoint holds is the predictor's business (fmlab.runs.predictor)."""

from __future__ import annotations

import pickle
import warnings
import zipfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch

from fmlab.errors import FmlabError, OutputError
from fmlab.io import atomic_path, limit_bytes, too_large

FORMAT_VERSION = 2
NUM_CLASSES = 10
LIMIT_VARIABLE = "FMLAB_MAX_CHECKPOINT_MB"  # raises the 512 MiB limit on a checkpoint, packed and unpacked


class CheckpointError(FmlabError):
    """A checkpoint is missing, corrupt, unsafe or does not fit its model."""


def save(path: str | Path, payload: dict[str, Any]) -> None:
    """Atomically write `payload` (tensors, dicts, lists, str, numbers) to `path`."""
    with atomic_path(path) as tmp:
        try:
            torch.save(payload, tmp)
        except RuntimeError as exc:  # torch reports a failed write (a full disk) as a RuntimeError
            raise OutputError(f"{path}: cannot write the checkpoint ({first_line(exc)})") from None


def read(path: str | Path, keys: Collection[str]) -> dict[str, Any]:
    """Load a checkpoint file holding at most `keys` without executing any code it might carry, refusing
    before loading anything what is not a PyTorch archive or would unpack to more than the size limit."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; train a model first (fmlab train --out DIR)")
    limit = limit_bytes(LIMIT_VARIABLE, 512)
    size = path.stat().st_size
    if size > limit:
        raise CheckpointError(too_large(path, size, limit, "checkpoints", LIMIT_VARIABLE))
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise CheckpointError(f"{path}: refused to load: not a PyTorch checkpoint, or a damaged one "
                              f"({_looks_like(path)}); only fmlab checkpoints are accepted") from None
    if unpacked > limit:
        raise CheckpointError(f"{path}: unpacks to {unpacked / 2**20:,.0f} MiB, over the {limit >> 20:,} MiB limit "
                              f"for checkpoints; refused (raise it with {LIMIT_VARIABLE}=<MiB> if it is trusted)")
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
    unknown = sorted(str(k) for k in set(payload) - set(keys))
    if unknown:
        raise CheckpointError(f"{path}: unexpected entry '{unknown[0]}'; not an fmlab checkpoint of this kind")
    return payload


def is_checkpoint(path: str | Path) -> bool:
    """Whether `path` is a PyTorch archive (what an fmlab checkpoint is), without loading it."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/data.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False


def _looks_like(path: Path) -> str:
    with path.open("rb") as fh:
        head = fh.read(64)
    for magic, kind in ((b"\x89PNG", "a PNG image"), (b"\xff\xd8", "a JPEG image"), (b"\x1f\x8b", "gzip data"),
                        (b"PK", "a damaged zip archive"), (b"\x80", "a bare pickle")):
        if head.startswith(magic):
            return f"it looks like {kind}"
    if not head:
        return "it is empty"
    return "it looks like text" if all(32 <= b < 127 or b in b"\t\r\n" for b in head) else "unknown binary data"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:160]}" if text else type(exc).__name__
