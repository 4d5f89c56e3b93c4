"""Integration: the real Fashion-MNIST files."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from fmlab.data import make_split
from fmlab.data.fashion_mnist import CHECKSUMS, FILES, load
from fmlab.data.idx import sha256
from fmlab.data.summary import describe

pytestmark = pytest.mark.integration


def test_shapes_and_dtypes(real_data):
    assert real_data.x_train.shape == (60_000, 28, 28) and real_data.x_train.dtype == np.uint8
    assert real_data.x_test.shape == (10_000, 28, 28) and real_data.x_test.dtype == np.uint8
    assert real_data.y_train.shape == (60_000,) and real_data.y_train.dtype == np.int64
    assert real_data.y_test.shape == (10_000,) and real_data.y_test.dtype == np.int64


def test_balanced_classes(real_data):
    np.testing.assert_array_equal(np.bincount(real_data.y_train), [6_000] * 10)
    np.testing.assert_array_equal(np.bincount(real_data.y_test), [1_000] * 10)


def test_recorded_checksums_are_those_of_the_files(real_data):
    """Recomputed here from the decompressed bytes, independently of the reader."""
    assert real_data.checksums == CHECKSUMS
    for name in FILES.values():
        assert sha256(gzip.decompress((real_data.source.path / name).read_bytes())) == CHECKSUMS[name]


def test_found_without_being_told(real_data):
    assert real_data.source.origin in {"system", "cache", "$FMLAB_DATA_DIR"}
    again = load(real_data.source.path, download=False)
    assert again.source.origin == "--data-dir"
    np.testing.assert_array_equal(again.y_test, real_data.y_test)


def test_default_split(real_data):
    split = make_split(real_data)
    assert (len(split.train_idx), len(split.val_idx)) == (55_000, 5_000)
    assert np.intersect1d(split.train_idx, split.val_idx).size == 0
    np.testing.assert_array_equal(np.bincount(real_data.y_train[split.val_idx]), [500] * 10)
    np.testing.assert_array_equal(np.bincount(real_data.y_train[split.train_idx]), [5_500] * 10)
    # the well-known Fashion-MNIST pixel statistics, here from the 55,000 training images only
    assert split.mean == pytest.approx(0.2860, abs=2e-3)
    assert split.std == pytest.approx(0.3530, abs=2e-3)
    assert make_split(real_data).val_idx.tolist() == split.val_idx.tolist()
    assert make_split(real_data, seed=1).val_idx.tolist() != split.val_idx.tolist()


def test_describe(real_data):
    info = describe()
    assert info["counts"] == {"train": 55_000, "val": 5_000, "test": 10_000}
    assert set(info["per_class"]["test"].values()) == {1_000}
    assert all(f["verified"] and f["sha256"] == CHECKSUMS[name] for name, f in info["files"].items())
