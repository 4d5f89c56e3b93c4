"""Read and write IDX files (the format of MNIST and Fashion-MNIST), gzip'd or plain.

Layout: two zero bytes, a dtype code, the number of dimensions, each dimension as a
big-endian uint32, then the values in C order (multi-byte values big-endian).
"""

from __future__ import annotations

import gzip
import hashlib
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from fmlab.errors import ChecksumError, DataError, GzipError, IdxMagicError, IdxShapeError, IdxTruncatedError
from fmlab.io import atomic_path, limit_bytes, read_limited

DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
CODES = {dt.newbyteorder("="): code for code, dt in DTYPES.items()}
MAX_DIM = 1 << 28


MAX_CONTENT = 64 << 20  # a Fashion-MNIST file holds at most 47 MB
LIMIT_VARIABLE = "FMLAB_MAX_INPUT_MB"


def decompress(raw: bytes, name: str, max_bytes: int = MAX_CONTENT) -> bytes:
    """The content of gzip'd bytes (or the bytes themselves when not gzip'd), refusing more than `max_bytes`
    of it: a small file that inflates to gigabytes stops here, before it is in memory."""
    if raw[:2] != b"\x1f\x8b":
        return raw
    inflater = zlib.decompressobj(wbits=31)  # gzip framing; the trailer's CRC and size are checked at the end
    try:
        content = inflater.decompress(raw, max_bytes + 1)
    except zlib.error as exc:
        raise GzipError(f"{name}: corrupt gzip data ({exc}); delete the file and fetch it again") from None
    if len(content) > max_bytes:
        raise GzipError(f"{name}: decompresses to more than {max_bytes:,} bytes, more than the file it should be "
                        "holds; refused (delete it and fetch it again)")
    if not inflater.eof:
        raise GzipError(f"{name}: corrupt gzip data (truncated); delete the file and fetch it again")
    return content


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def parse(content: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode IDX content, checking the header against the body length."""
    if len(content) < 4 or content[:2] != b"\x00\x00" or content[2] not in DTYPES:
        raise IdxMagicError(f"{name}: not an IDX file (bad magic number {content[:4].hex() or 'empty'})")
    dtype, ndim = DTYPES[content[2]], content[3]
    if not 1 <= ndim <= 8 or len(content) < 4 + 4 * ndim:
        raise IdxShapeError(f"{name}: IDX header declares {ndim} dimensions; file too short or corrupt")
    dims = struct.unpack(f">{ndim}I", content[4 : 4 + 4 * ndim])
    if any(d == 0 or d > MAX_DIM for d in dims):
        raise IdxShapeError(f"{name}: IDX dimensions {dims} are not plausible")
    expected = math.prod(dims) * dtype.itemsize  # Python ints: no overflow
    body = len(content) - 4 - 4 * ndim
    if body != expected:
        raise IdxTruncatedError(
            f"{name}: IDX body has {body} bytes but header {dims} needs {expected}; "
            "the file is truncated or corrupt, fetch it again"
        )
    array = np.frombuffer(content, dtype=dtype, offset=4 + 4 * ndim).reshape(dims)
    # Always a writable, native-order copy: a read-only view of `content` makes torch.as_tensor warn.
    return array.astype(dtype.newbyteorder("="), copy=True)


def read(path: str | Path, checksum: str | None = None, max_bytes: int = MAX_CONTENT) -> np.ndarray:
    """Read an IDX file (at most `max_bytes` of content), verifying the SHA-256 of its content when given."""
    path = Path(path)
    try:
        raw = read_limited(path, limit_bytes(LIMIT_VARIABLE, 64), "data files", LIMIT_VARIABLE)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc}); check the path and its permissions") from None
    except ValueError as exc:
        raise DataError(str(exc)) from None
    content = decompress(raw, str(path), max_bytes)
    if checksum is not None and sha256(content) != checksum:
        raise ChecksumError(f"{path}: checksum mismatch (content differs from the official file); fetch it again")
    return parse(content, str(path))


def encode(array: np.ndarray) -> bytes:
    """Encode an array as IDX content (uncompressed)."""
    array = np.ascontiguousarray(array)
    code = CODES.get(array.dtype.newbyteorder("="))  # big-endian input is fine too
    if code is None:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(DTYPES[code], copy=False).tobytes()


def write(path: str | Path, array: np.ndarray, compress: bool = True) -> None:
    """Write an IDX file, gzip'd by default."""
    content = encode(array)
    data = gzip.compress(content, mtime=0) if compress else content
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
