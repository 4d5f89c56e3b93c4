"""Seeded stratified train/validation split, train-only normalisation, in-memory batches."""

from __future__ import annotations

import numbers
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from fmlab.data.fashion_mnist import FashionMNIST
from fmlab.errors import ConfigError


@dataclass(frozen=True)
class Split:
    """Index sets into the official training set, plus normalisation from the train part."""

    train_idx: np.ndarray
    val_idx: np.ndarray
    mean: float
    std: float
    seed: int


def split_indices(
    labels: np.ndarray, val_size: int = 5000, seed: int = 0, train_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded split of `labels` into train and validation indices (sorted). The validation part
    depends on `val_size` and `seed` only: a `train_size` subset trains on part of the rest, validated on the
    same images as the full split."""
    n = len(labels)
    for name, size in (("val_size", val_size), ("train_size", train_size)):
        if size is not None and (isinstance(size, bool) or not isinstance(size, numbers.Integral)):
            raise ConfigError(f"{name} must be a whole number of examples, got {size!r}")
    if not 0 < val_size < n:
        raise ConfigError(f"val_size must be between 1 and {n - 1}, got {val_size}")
    if train_size is not None and not 0 < train_size <= n - val_size:
        raise ConfigError(f"train_size must be between 1 and {n - val_size}, got {train_size}")
    try:
        train, val = train_test_split(np.arange(n), test_size=val_size, stratify=labels, random_state=seed)
        if train_size is not None and train_size < len(train):
            train, _ = train_test_split(train, train_size=train_size, stratify=labels[train], random_state=seed)
    except ValueError as exc:  # e.g. fewer validation examples than classes
        raise ConfigError(f"cannot make a stratified split: {exc}".replace("\n", " ")) from None
    return np.sort(train), np.sort(val)


def pixel_stats(images: np.ndarray) -> tuple[float, float]:
    """Mean and (population) std of the pixels of `images` on the [0, 1] scale.

    uint8 images are counted with a 256-bin histogram: exact, and no float64 copy of the set.
    """
    if images.dtype != np.uint8:
        pixels = images.astype(np.float64) / 255.0
        return float(pixels.mean()), float(pixels.std())
    flat = images.reshape(-1)
    chunk = 1 << 22  # bincount widens to intp: count in chunks to keep that copy small
    counts = sum(np.bincount(flat[i : i + chunk], minlength=256) for i in range(0, len(flat), chunk))
    counts = np.asarray(counts, dtype=np.float64)
    values = np.arange(256, dtype=np.float64) / 255.0
    total = counts.sum()
    mean = counts @ values / total
    return float(mean), float(np.sqrt(counts @ (values - mean) ** 2 / total))


def make_split(
    data: FashionMNIST, val_size: int = 5000, seed: int = 0, train_size: int | None = None
) -> Split:
    """Split the official training set; mean/std (of pixels in [0, 1]) come from train only."""
    train, val = split_indices(data.y_train, val_size, seed, train_size)
    mean, std = pixel_stats(data.x_train[train])
    return Split(train, val, mean, std, seed)


def to_tensor(images: np.ndarray, mean: float, std: float, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 (N, 28, 28) -> normalised float32 (N, 1, 28, 28) on `device`."""
    x = torch.as_tensor(np.ascontiguousarray(images), device=device).unsqueeze(1).float()
    return x.div_(255.0).sub_(mean).div_(std)


def batches(
    n: int, batch_size: int, generator: torch.Generator | None = None, drop_last: bool = False
) -> Iterator[torch.Tensor]:
    """Index batches over a permutation of range(n) (shuffled when a generator is given)."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield order[start : start + batch_size]
