"""Seeded stratified train/validation split, train-only normalisation, in-memory batches."""

from __future__ import annotations

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
    """Stratified, seeded split of `labels` into train and validation indices (sorted)."""
    n = len(labels)
    if not 0 < val_size < n:
        raise ConfigError(f"val_size must be between 1 and {n - 1}, got {val_size}")
    if train_size is not None and not 0 < train_size <= n - val_size:
        raise ConfigError(f"train_size must be between 1 and {n - val_size}, got {train_size}")
    train, val = train_test_split(
        np.arange(n), test_size=val_size, train_size=train_size, stratify=labels, random_state=seed
    )
    return np.sort(train), np.sort(val)


def make_split(
    data: FashionMNIST, val_size: int = 5000, seed: int = 0, train_size: int | None = None
) -> Split:
    """Split the official training set; mean/std (of pixels in [0, 1]) come from train only."""
    train, val = split_indices(data.y_train, val_size, seed, train_size)
    pixels = data.x_train[train].astype(np.float64) / 255.0
    return Split(train, val, float(pixels.mean()), float(pixels.std()), seed)


def to_tensor(images: np.ndarray, mean: float, std: float, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 (N, 28, 28) -> normalised float32 (N, 1, 28, 28) on `device`."""
    x = torch.as_tensor(np.ascontiguousarray(images), device=device).unsqueeze(1).float()
    return x.div_(255.0).sub_(mean).div_(std)


def batches(
    n: int, batch_size: int, generator: torch.Generator | None = None, drop_last: bool = False
) -> Iterator[torch.Tensor]:
    """Index batches over a permutation of range(n) (shuffled when a generator is given)."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield order[start : start + batch_size]
