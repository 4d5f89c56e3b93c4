"""Shared fixtures.

No test touches the network or the user's cache: the mirror points at a closed loopback
port and XDG_CACHE_HOME at a fresh temporary folder (per session, and again per test).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from fmlab.data import FashionMNIST, idx, load
from fmlab.data.fashion_mnist import CHECKSUMS, FILES

UNREACHABLE_MIRROR = "http://127.0.0.1:9/"


@pytest.fixture(scope="session", autouse=True)
def _offline_session(tmp_path_factory: pytest.TempPathFactory):
    """Session-wide: also covers session fixtures (real_data) and CLI subprocesses."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FMLAB_MIRROR", UNREACHABLE_MIRROR)
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("session-cache")))
        yield


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Per test: an empty cache of its own, no $FMLAB_DATA_DIR, no reachable mirror."""
    monkeypatch.setenv("FMLAB_MIRROR", UNREACHABLE_MIRROR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("FMLAB_DATA_DIR", raising=False)


@pytest.fixture(scope="session")
def real_data(_offline_session) -> FashionMNIST:
    """The real Fashion-MNIST (CI installs `dataset-fashion-mnist`), verified by checksum."""
    return load()


@dataclass(frozen=True)
class SyntheticSet:
    """A tiny Fashion-MNIST look-alike on disk: the folder, its arrays, their checksums."""

    path: Path
    arrays: dict[str, np.ndarray]  # keys as in fmlab.data.fashion_mnist.FILES
    checksums: dict[str, str]  # file name -> sha256 of the decompressed content


def write_synthetic(folder: Path, train_per_class: int = 6, test_per_class: int = 2, seed: int = 0) -> SyntheticSet:
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for part, per_class in (("train", train_per_class), ("test", test_per_class)):
        labels = rng.permutation(np.repeat(np.arange(10, dtype=np.uint8), per_class))
        arrays[f"{part}_images"] = rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
        arrays[f"{part}_labels"] = labels
    folder.mkdir(parents=True, exist_ok=True)
    checksums = {}
    for key, name in FILES.items():
        idx.write(folder / name, arrays[key])
        checksums[name] = idx.sha256(idx.encode(arrays[key]))
    return SyntheticSet(folder, arrays, checksums)


@pytest.fixture
def make_synthetic() -> Callable[..., SyntheticSet]:
    """Factory: make_synthetic(folder, train_per_class=6, test_per_class=2, seed=0)."""
    return write_synthetic


@pytest.fixture
def synthetic(tmp_path: Path) -> SyntheticSet:
    """60 training and 20 test images, balanced over the 10 classes."""
    return write_synthetic(tmp_path / "synthetic")


@pytest.fixture
def make_trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., SyntheticSet]:
    """Factory: a synthetic folder whose checksums fmlab accepts (recorded for this test only)."""

    def make(train_per_class: int = 6, test_per_class: int = 2) -> SyntheticSet:
        syn = write_synthetic(tmp_path / "trusted", train_per_class, test_per_class)
        for name, digest in syn.checksums.items():
            monkeypatch.setitem(CHECKSUMS, name, digest)
        return syn

    return make
