"""Stratified seeded split, train-only normalisation, index batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fmlab.data import FashionMNIST, make_split
from fmlab.data.fashion_mnist import Source
from fmlab.data.split import batches, pixel_stats, split_indices, to_tensor
from fmlab.errors import ConfigError

# Unequal classes: class k has 40 + 10k examples (40 … 130), 850 in all, shuffled.
COUNTS = 40 + 10 * np.arange(10)
LABELS = np.random.default_rng(0).permutation(np.repeat(np.arange(10), COUNTS))


def test_split_is_disjoint_complete_and_sorted():
    train, val = split_indices(LABELS, val_size=170, seed=0)
    assert len(val) == 170 and len(train) == len(LABELS) - 170
    assert np.intersect1d(train, val).size == 0
    np.testing.assert_array_equal(np.union1d(train, val), np.arange(len(LABELS)))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)


def test_split_is_stratified():
    # val is 20 % of every class; proportions of classes equal in train and val
    train, val = split_indices(LABELS, val_size=170, seed=3)
    np.testing.assert_array_equal(np.bincount(LABELS[val], minlength=10), COUNTS // 5)
    np.testing.assert_array_equal(np.bincount(LABELS[train], minlength=10), COUNTS - COUNTS // 5)
    np.testing.assert_allclose(np.bincount(LABELS[val]) / len(val), np.bincount(LABELS[train]) / len(train))


def test_split_is_seeded():
    a = split_indices(LABELS, val_size=100, seed=11)
    b = split_indices(LABELS, val_size=100, seed=11)
    c = split_indices(LABELS, val_size=100, seed=12)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_train_size_takes_a_stratified_subset():
    train, val = split_indices(LABELS, val_size=170, seed=0, train_size=340)
    assert len(train) == 340 and len(val) == 170
    assert np.intersect1d(train, val).size == 0
    np.testing.assert_array_equal(np.bincount(LABELS[train], minlength=10), 2 * (COUNTS // 5))
    # the validation set does not depend on how much of the rest is used for training
    np.testing.assert_array_equal(np.bincount(LABELS[val], minlength=10), COUNTS // 5)


@pytest.mark.parametrize(
    ("val_size", "train_size", "message"),
    [
        (0, None, "val_size"),
        (-5, None, "val_size"),
        (850, None, "val_size"),
        (1000, None, "val_size"),
        (100, 0, "train_size"),
        (100, 751, "train_size"),
        (5, None, "stratified"),  # fewer validation examples than classes
        (0.2, None, "whole number"),
        (100, 0.5, "whole number"),
        (True, None, "whole number"),
    ],
)
def test_bad_sizes_raise_config_error(val_size, train_size, message):
    with pytest.raises(ConfigError, match=message) as info:
        split_indices(LABELS, val_size=val_size, train_size=train_size)
    assert "\n" not in str(info.value)


def test_class_too_small_to_stratify_is_a_config_error():
    labels = np.array([0] * 50 + [1] * 50 + [2])
    with pytest.raises(ConfigError, match="stratified"):
        split_indices(labels, val_size=10)


def test_numpy_integer_sizes_are_accepted():
    train, val = split_indices(LABELS, val_size=np.int64(170), train_size=np.int32(340))
    assert (len(train), len(val)) == (340, 170)


def _dataset(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray | None = None) -> FashionMNIST:
    x_test = np.full((10, 28, 28), 255, np.uint8) if x_test is None else x_test
    return FashionMNIST(x_train, y_train, x_test, np.arange(10), Source(None, "test"), {})


def test_normalisation_from_train_only():
    rng = np.random.default_rng(5)
    seed, val_size = 4, 170
    train, val = split_indices(LABELS, val_size=val_size, seed=seed)
    x = np.empty((len(LABELS), 28, 28), np.uint8)
    x[train] = rng.integers(0, 64, (len(train), 28, 28))  # dark training images
    x[val] = 255  # white validation images, white test images: they must not count
    split = make_split(_dataset(x, LABELS), val_size=val_size, seed=seed)
    np.testing.assert_array_equal(split.val_idx, val)
    pixels = x[train].astype(np.float64) / 255.0
    assert split.mean == pytest.approx(pixels.mean(), rel=1e-12)
    assert split.std == pytest.approx(pixels.std(), rel=1e-12)
    assert split.mean < 0.13 < (x.astype(np.float64) / 255).mean()
    assert split.seed == seed


def test_normalisation_follows_train_size():
    train, _ = split_indices(LABELS, val_size=170, seed=0, train_size=200)
    x = np.zeros((len(LABELS), 28, 28), np.uint8)
    x[train] = 100
    split = make_split(_dataset(x, LABELS), val_size=170, seed=0, train_size=200)
    assert (split.mean, split.std) == pytest.approx((100 / 255, 0.0), abs=1e-12)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_pixel_stats_match_numpy(dtype):
    x = np.random.default_rng(2).integers(0, 256, (300, 28, 28)).astype(dtype)
    pixels = x.astype(np.float64) / 255.0
    mean, std = pixel_stats(x)
    assert mean == pytest.approx(pixels.mean(), rel=1e-12)
    assert std == pytest.approx(pixels.std(), rel=1e-12)


def test_to_tensor_normalises():
    x = np.array([[[0, 255]]], np.uint8).repeat(28, 1).repeat(14, 2)  # (1, 28, 28)
    t = to_tensor(x, mean=0.5, std=0.25)
    assert t.shape == (1, 1, 28, 28) and t.dtype == torch.float32
    assert set(t.unique().tolist()) == {-2.0, 2.0}


def test_batches_cover_a_permutation():
    got = list(batches(103, 10, torch.Generator().manual_seed(0)))
    assert [len(b) for b in got] == [10] * 10 + [3]
    order = torch.cat(got)
    assert sorted(order.tolist()) == list(range(103))
    assert order.tolist() != list(range(103))  # shuffled


def test_batches_without_generator_are_in_order():
    assert torch.cat(list(batches(25, 7))).tolist() == list(range(25))


def test_batches_are_seeded():
    def run(seed: int) -> list[int]:
        return torch.cat(list(batches(50, 8, torch.Generator().manual_seed(seed)))).tolist()

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_batches_drop_last():
    got = list(batches(103, 10, torch.Generator().manual_seed(0), drop_last=True))
    assert [len(b) for b in got] == [10] * 10
    assert len(set(torch.cat(got).tolist())) == 100
    assert [len(b) for b in batches(100, 10, drop_last=True)] == [10] * 10  # exact multiple: nothing dropped


@pytest.mark.parametrize("batch_size", [0, -1])
def test_batches_bad_size(batch_size):
    with pytest.raises(ConfigError, match="batch_size"):
        list(batches(10, batch_size))


def test_a_train_size_subset_is_validated_on_the_full_splits_images():
    full_train, full_val = split_indices(LABELS, val_size=170, seed=4)
    train, val = split_indices(LABELS, val_size=170, seed=4, train_size=200)
    assert np.array_equal(val, full_val) and set(train) < set(full_train)
