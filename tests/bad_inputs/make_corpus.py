"""Write the committed corpus of bad inputs (each file tiny; run again to regenerate them all).

    python tests/bad_inputs/make_corpus.py

Images (each must give a one-line error naming the file):
  not_an_image.png   text with a .png name          empty.png          zero bytes
  zero_size.png      valid PNG header declaring 0x0 huge.png           header declaring 100000x100000
  bomb_warning.png   header declaring 10000x10000   over_limit.png     header declaring 8000x8000
  truncated.png      a real PNG cut in the middle   wrong_shape.npy    (3, 5) array
  object_array.npy   dtype=object (needs pickle)    truncated.idx      IDX body shorter than its header
  escaped_header.npy header with an invalid escape (Python's parser warns on it)
Checkpoints (each must be refused with a one-line error):
  empty.pt  garbage.pt  truncated.pt  future_format.pt  seven_classes.pt  wrong_arch.pt
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, rows: bytes) -> bytes:
    """A grayscale 8-bit PNG whose IHDR declares width x height, whatever the rows hold."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def npy_header(header: bytes) -> bytes:
    """A version 1.0 .npy preamble holding `header`, padded as numpy pads it."""
    padded = header + b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(padded)) + padded


def images() -> dict[str, bytes]:
    gradient = b"".join(b"\x00" + bytes(range(0, 256, 8)) for _ in range(32))  # 32x32, filter byte per row
    good = png(32, 32, gradient)
    npy_wrong, npy_object = io.BytesIO(), io.BytesIO()
    np.save(npy_wrong, np.zeros((3, 5), np.uint8))
    np.save(npy_object, np.array([1, "x", None], dtype=object), allow_pickle=True)
    return {
        "not_an_image.png": b"This is a text file, not a picture.\n",
        "empty.png": b"",
        "zero_size.png": png(0, 0, b""),
        "huge.png": png(100_000, 100_000, b"\x00" * 64),  # Pillow's decompression-bomb error
        "bomb_warning.png": png(10_000, 10_000, b"\x00" * 64),  # Pillow only warns: fmlab refuses
        "over_limit.png": png(8_000, 8_000, b"\x00" * 64),  # 64 megapixels: over fmlab's 50-megapixel cap
        "truncated.png": good[: len(good) // 2],
        "wrong_shape.npy": npy_wrong.getvalue(),
        "object_array.npy": npy_object.getvalue(),
        "escaped_header.npy": npy_header(b"{'descr': '\\q', 'fortran_order': False, 'shape': (28, 28), }") + bytes(784),
        "truncated.idx": bytes([0, 0, 8, 3]) + struct.pack(">3I", 2, 28, 28) + bytes(100),
    }


def checkpoints() -> dict[str, bytes]:
    import torch

    def saved(obj: object) -> bytes:
        buf = io.BytesIO()
        torch.save(obj, buf)
        return buf.getvalue()

    from fmlab.runs import resolve

    def spec(model: str) -> dict:
        return resolve([("corpus", {"model": model, "threads": 1, "precision": "fp32"})]).model_dump(mode="json")

    base = {"format": 2, "num_classes": 10, "spec": spec("logreg"), "key": "corpus",
            "norm": {"mean": 0.286, "std": 0.353}, "state_dict": {}}
    whole = saved(base)
    return {
        "empty.pt": b"",
        "garbage.pt": bytes(range(256)) * 2,
        "truncated.pt": whole[: len(whole) // 2],
        "future_format.pt": saved({**base, "format": 3}),
        "seven_classes.pt": saved({**base, "num_classes": 7}),
        "wrong_arch.pt": saved({**base, "spec": spec("lenet5"), "state_dict": {"linear.weight": torch.zeros(10, 4)}}),
    }


def main() -> None:
    for name, content in {**images(), **checkpoints()}.items():
        (HERE / name).write_bytes(content)
    total = sum(p.stat().st_size for p in HERE.iterdir() if p.is_file())
    print(f"wrote {HERE} ({total} bytes in all)")


if __name__ == "__main__":
    main()
