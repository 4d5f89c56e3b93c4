"""Fuzz the IDX reader, the image loader and checkpoint reading: nothing raises but the documented error type."""

from __future__ import annotations

import contextlib
import gzip
import io
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from fmlab.data import idx
from fmlab.errors import DataError
from fmlab.infer.images import ImageError, decode

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _encoded(fmt: str, mode: str = "L", size: tuple[int, int] = (9, 7)) -> bytes:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


SEEDS = [
    _encoded("PNG"), _encoded("PNG", "RGBA"), _encoded("PNG", "P"), _encoded("PNG", "I;16"),
    _encoded("JPEG", "RGB"), _encoded("GIF"), _encoded("BMP", "RGB"), _encoded("WEBP", "RGB"),
    _npy(np.zeros((2, 28, 28), np.uint8)), _npy(np.ones((28, 28), np.float32)),
    idx.encode(np.zeros((2, 28, 28), np.uint8)), gzip.compress(idx.encode(np.zeros((1, 28, 28), np.uint8))),
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid file of one of the accepted formats with bytes flipped, cut, or inserted."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[pos:]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


@st.composite
def idx_like(draw: st.DrawFn) -> bytes:
    """An IDX header with arbitrary dtype code and dimensions and a body of roughly the right length."""
    code = draw(st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0xFF]))
    dims = draw(st.lists(st.integers(0, 2**32 - 1) | st.integers(0, 40), min_size=0, max_size=9))
    header = bytes([0, 0, code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)
    return header + draw(st.binary(max_size=400))


@FUZZ
@given(st.binary(max_size=300) | idx_like())
@example(b"")
@example(bytes([0, 0, 8, 1]) + struct.pack(">I", 2**28) + b"\x00")
def test_idx_parse_only_raises_data_error(content: bytes) -> None:
    try:
        array = idx.parse(content, "fuzz")
    except DataError:
        return
    assert isinstance(array, np.ndarray)


def test_idx_parse_dimensions_whose_product_overflows() -> None:
    """2**84 items wrapped to 0 in int64 and matched an empty body (fixed with math.prod)."""
    with pytest.raises(DataError):
        idx.parse(bytes([0, 0, 8, 3]) + struct.pack(">3I", 2**28, 2**28, 2**28), "overflow")


@FUZZ
@given(st.binary(max_size=300) | idx_like() | st.binary(max_size=300).map(lambda b: b"\x1f\x8b" + b))
def test_idx_read_only_raises_data_error(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz-idx1-ubyte.gz"
        path.write_bytes(content)
        with contextlib.suppress(DataError):
            idx.read(path)


@FUZZ
@given(st.binary(max_size=400))
@example(b"")
@example(b"\x93NUMPY")
@example(b"\x89PNG\r\n\x1a\n")
def test_image_loader_on_arbitrary_bytes(content: bytes) -> None:
    _decode_or_image_error(content)


@FUZZ
@given(mutated())
def test_image_loader_on_mutated_files(content: bytes) -> None:
    _decode_or_image_error(content)


@pytest.mark.parametrize("seed", range(len(SEEDS)))
def test_seed_files_decode(seed: int) -> None:
    out = decode(SEEDS[seed], f"seed{seed}")
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[1:] == (28, 28)


def _decode_or_image_error(content: bytes) -> None:
    for invert in (False, True):
        try:
            out = decode(content, "fuzz", invert=invert)
        except ImageError as exc:
            assert "fuzz" in str(exc) and "\n" not in str(exc)
            continue
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[1:] == (28, 28) and len(out) >= 1


def _checkpoint_bytes() -> list[bytes]:
    """A real (logreg) checkpoint, in the current zip format and in torch's legacy format."""
    import torch

    from fmlab import models
    from fmlab.runs import Predictor, resolve

    spec = resolve([("fuzz", {"model": "logreg", "threads": 1, "precision": "fp32"})])
    payload = Predictor(models.build("logreg"), spec, 0.2, 0.3).payload("fuzz")
    new, old = io.BytesIO(), io.BytesIO()
    torch.save(payload, new)
    torch.save(payload, old, _use_new_zipfile_serialization=False)
    return [new.getvalue(), old.getvalue()]


CHECKPOINTS = _checkpoint_bytes()


@st.composite
def mutated_checkpoint(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(CHECKPOINTS)))
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, len(data) - 1)) if data else 0
        if draw(st.booleans()) and data:
            data[pos] = draw(st.integers(0, 255))
        else:
            del data[pos:]
    return bytes(data)


@FUZZ
@given(st.binary(max_size=200) | mutated_checkpoint())
@example(b"")
def test_checkpoint_loading_only_raises_checkpoint_error(content: bytes) -> None:
    from fmlab.runs import open_predictor
    from fmlab.training.checkpoint import CheckpointError

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.pt"
        path.write_bytes(content)
        with contextlib.suppress(CheckpointError):
            open_predictor(path)
