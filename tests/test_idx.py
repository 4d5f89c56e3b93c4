"""IDX files: round trip, and each kind of corruption raising its own error."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from fmlab.data import idx, load
from fmlab.data.fashion_mnist import FILES
from fmlab.errors import ChecksumError, DataError, GzipError, IdxMagicError, IdxShapeError, IdxTruncatedError

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


def _sample(dtype, shape=(3, 4, 5)) -> np.ndarray:
    rng = np.random.default_rng(1)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    return (rng.standard_normal(shape) * 1e3).astype(dtype)


def _header(code: int, dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "plain"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_round_trip(tmp_path, dtype, compress):
    array = _sample(dtype)
    path = tmp_path / "a.idx"
    idx.write(path, array, compress=compress)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") is compress
    back = idx.read(path, checksum=idx.sha256(idx.encode(array)))
    assert back.dtype == np.dtype(dtype)  # native byte order again
    assert back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable  # a read-only array makes torch.as_tensor warn


@pytest.mark.parametrize("shape", [(7,), (2, 3), (1, 28, 28), (2, 1, 3, 1, 2)])
def test_round_trip_shapes(tmp_path, shape):
    array = _sample(np.uint8, shape)
    idx.write(tmp_path / "a.gz", array)
    np.testing.assert_array_equal(idx.read(tmp_path / "a.gz"), array)


def test_encoding_is_big_endian_and_header_exact():
    content = idx.encode(np.array([[1, 256]], dtype=np.int32))
    assert content == _header(0x0C, (1, 2)) + b"\x00\x00\x00\x01\x00\x00\x01\x00"
    # a big-endian input array encodes to the same bytes
    assert idx.encode(np.array([[1, 256]], dtype=">i4")) == content


def test_unsupported_dtype_is_refused():
    with pytest.raises(ValueError, match="int64"):
        idx.encode(np.zeros(3, dtype=np.int64))


def test_write_leaves_no_temp_file(tmp_path):
    idx.write(tmp_path / "a.gz", _sample(np.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["a.gz"]


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\x00\x00",
        b"\x01\x00\x08\x01\x00\x00\x00\x01\x07",  # first byte not zero
        b"\x00\x01\x08\x01\x00\x00\x00\x01\x07",  # second byte not zero
        b"\x00\x00\x07\x01\x00\x00\x00\x01\x07",  # unknown dtype code
        b"PK\x03\x04 not an idx file at all",
    ],
)
def test_bad_magic(tmp_path, content):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(content)
    with pytest.raises(IdxMagicError, match="bad-idx1-ubyte"):
        idx.read(path)


@pytest.mark.parametrize(
    "content",
    [
        bytes([0, 0, 8, 0]),  # zero dimensions
        bytes([0, 0, 8, 9]) + b"\x00" * 36,  # more dimensions than IDX allows
        bytes([0, 0, 8, 3, 0, 0, 0, 2]),  # header cut inside the dimensions
        _header(0x08, (2, 0, 3)),  # a zero-length dimension
        _header(0x08, (2, (1 << 28) + 1)),  # an implausibly large dimension
    ],
)
def test_impossible_dims(tmp_path, content):
    path = tmp_path / "dims.gz"
    path.write_bytes(gzip.compress(content))
    with pytest.raises(IdxShapeError, match=r"dims\.gz"):
        idx.read(path)


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "plain"])
@pytest.mark.parametrize("change", [-1, -100, +1], ids=["short-1", "short-100", "long+1"])
def test_truncated_or_padded_body(tmp_path, compress, change):
    content = idx.encode(_sample(np.int16, (5, 28, 28)))
    content = content[:change] if change < 0 else content + b"\x00" * change
    path = tmp_path / "t.idx"
    path.write_bytes(gzip.compress(content) if compress else content)
    with pytest.raises(IdxTruncatedError, match=r"t\.idx") as info:
        idx.read(path)
    assert "\n" not in str(info.value)


def test_huge_header_dims_do_not_overflow(tmp_path):
    # 8 dims of 2**28: the element count wraps to 0 in int64, which must not pass as "no body"
    path = tmp_path / "huge"
    path.write_bytes(_header(0x08, (1 << 28,) * 8))
    with pytest.raises(IdxTruncatedError):
        idx.read(path)


@pytest.mark.parametrize("damage", ["cut", "garbage", "crc"])
def test_gzip_garbage(tmp_path, damage):
    packed = gzip.compress(idx.encode(_sample(np.uint8, (50, 28, 28))))
    if damage == "cut":
        packed = packed[: len(packed) // 2]
    elif damage == "garbage":
        packed = packed[:10] + bytes(range(256)) * 4
    else:  # flip a byte of the CRC32 trailer
        packed = packed[:-8] + bytes([packed[-8] ^ 0xFF]) + packed[-7:]
    path = tmp_path / "g.gz"
    path.write_bytes(packed)
    with pytest.raises(GzipError, match=r"g\.gz") as info:
        idx.read(path)
    assert "\n" not in str(info.value)


def test_wrong_checksum(tmp_path):
    array = _sample(np.uint8)
    idx.write(tmp_path / "c.gz", array)
    good = idx.sha256(idx.encode(array))
    idx.read(tmp_path / "c.gz", checksum=good)
    with pytest.raises(ChecksumError, match=r"c\.gz"):
        idx.read(tmp_path / "c.gz", checksum="0" * 64)


def test_checksum_is_of_decompressed_content(tmp_path):
    """A repack (other gzip level, or no gzip at all) keeps the checksum valid."""
    content = idx.encode(_sample(np.uint8, (4, 28, 28)))
    digest = idx.sha256(content)
    (tmp_path / "fast.gz").write_bytes(gzip.compress(content, compresslevel=1, mtime=12345))
    (tmp_path / "best.gz").write_bytes(gzip.compress(content, compresslevel=9, mtime=0))
    (tmp_path / "plain").write_bytes(content)
    arrays = [idx.read(tmp_path / name, checksum=digest) for name in ("fast.gz", "best.gz", "plain")]
    for a in arrays[1:]:
        np.testing.assert_array_equal(a, arrays[0])


def test_unreadable_path_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="not a regular file"):
        idx.read(tmp_path)  # a folder, not a file
    with pytest.raises(DataError, match="cannot read"):
        idx.read(tmp_path / "absent.gz")


# Mismatched files in a data folder: each set of four files is otherwise valid IDX.


@pytest.mark.parametrize(
    ("key", "array", "message"),
    [
        ("train_labels", np.zeros((60, 1, 1), np.uint8), "labels of shape"),
        ("train_labels", np.zeros(59, np.uint8), "do not match 60 images"),
        ("test_labels", np.zeros(21, np.uint8), "do not match 20 images"),
        ("train_images", np.zeros((60, 27, 27), np.uint8), r"\(N, 28, 28\)"),
        ("test_images", np.zeros((20, 784), np.uint8), r"\(N, 28, 28\)"),
        ("train_images", np.zeros((60, 28, 28), np.float32), "uint8"),
        ("train_labels", np.full(60, 10, np.uint8), "outside 0..9"),
        ("test_labels", np.full(20, -1, np.int8), "outside 0..9"),
    ],
)
def test_mismatched_folder_is_a_shape_error(synthetic, key, array, message):
    idx.write(synthetic.path / FILES[key], array)
    with pytest.raises(IdxShapeError, match=message) as info:
        load(synthetic.path, checksums={})  # no checksums: let the shape checks speak
    assert FILES[key].split("-")[0] in str(info.value)  # names the files of that part


def test_folder_checksums_verified_on_load(synthetic):
    data = load(synthetic.path, checksums=synthetic.checksums)
    np.testing.assert_array_equal(data.x_train, synthetic.arrays["train_images"])
    assert data.y_train.dtype == np.int64
    bad = dict(synthetic.checksums, **{FILES["test_images"]: "f" * 64})
    with pytest.raises(ChecksumError, match=FILES["test_images"]):
        load(synthetic.path, checksums=bad)
