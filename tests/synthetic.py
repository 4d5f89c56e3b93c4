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


def trained_run(folder: Path, model: str, data: FashionMNIST | None = None, **settings: object):
    """A finished run folder, as `fmlab train` writes it: `model` trained for one epoch on a small synthetic set."""
    from fmlab.runs import RunDir, resolve
    from fmlab.training.fit import fit

    data = data if data is not None else make_data(200, 100)
    spec = resolve([("test", {"model": model, "epochs": 1, "val_size": 50, "batch_size": 32, **settings})])
    fit(spec, folder, data=data, device="cpu", progress=False)
    return RunDir(folder)


NORM = (0.286, 0.353)


def checkpoint_file(path: Path, name: str, net=None, **changes: object) -> Path:
    """A bare checkpoint file of `name` (seeded untrained weights unless `net` is given), payload keys
    replaced by `changes`."""
    import torch

    from fmlab import models
    from fmlab.runs import Predictor, resolve
    from fmlab.training import checkpoint

    torch.manual_seed(0)
    spec = resolve([("test", {"model": name})])
    net = net if net is not None else models.build(name, **spec.model_args)
    checkpoint.save(path, {**Predictor(net, spec, *NORM).payload("test"), **changes})
    return path
