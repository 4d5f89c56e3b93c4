"""Small synthetic Fashion-MNIST look-alikes made in the tests: class k lights up its own band."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fmlab.data import idx
from fmlab.data.fashion_mnist import FILES, FashionMNIST, Source


def images(labels: np.ndarray, rng: np.random.Generator, noise: int = 60) -> np.ndarray:
    x = rng.integers(0, noise, size=(len(labels), 28, 28))
    for i, k in enumerate(labels):
        row = 2 + 2 * int(k)
        x[i, row : row + 3, 4:24] += 180
    return np.clip(x, 0, 255).astype(np.uint8)


def make_data(n_train: int = 1200, n_test: int = 300, seed: int = 0) -> FashionMNIST:
    rng = np.random.default_rng(seed)
    y_train = np.arange(n_train) % 10
    y_test = np.arange(n_test) % 10
    rng.shuffle(y_train)
    return FashionMNIST(
        images(y_train, rng), y_train.astype(np.int64), images(y_test, rng), y_test.astype(np.int64),
        Source(Path("synthetic"), "test"), {},
    )


def write_idx_folder(folder: Path, data: FashionMNIST) -> dict[str, str]:
    """Write `data` as the four gzip'd IDX files; return their content checksums."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_images": data.x_train, "train_labels": data.y_train.astype(np.uint8),
        "test_images": data.x_test, "test_labels": data.y_test.astype(np.uint8),
    }
    sums = {}
    for key, name in FILES.items():
        idx.write(folder / name, arrays[key])
        sums[name] = idx.sha256(idx.encode(arrays[key]))
    return sums
