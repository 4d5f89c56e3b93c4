"""Find, verify and (when nothing else is there) download Fashion-MNIST.

Lookup order: an explicit folder, $FMLAB_DATA_DIR, the user cache, the Debian package
folder, then a download from the official mirror into the cache. Files are verified by
the SHA-256 of their decompressed content, which distribution repacks leave unchanged.
"""

from __future__ import annotations

import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmlab.data import idx
from fmlab.errors import DataError, DataNotFoundError, IdxShapeError

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
# Bytes of the decompressed IDX content of the official files: what a file may inflate to at most.
SIZES = {
    "train-images-idx3-ubyte.gz": 47_040_016,
    "train-labels-idx1-ubyte.gz": 60_008,
    "t10k-images-idx3-ubyte.gz": 7_840_016,
    "t10k-labels-idx1-ubyte.gz": 10_008,
}
# SHA-256 of the decompressed IDX content of the official files.
CHECKSUMS = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
SYSTEM_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)


@dataclass(frozen=True)
class Source:
    """Where the data set was found: the folder and how it was chosen."""

    path: Path
    origin: str  # "--data-dir", "$FMLAB_DATA_DIR", "cache", "system" or "download"


@dataclass(frozen=True)
class FashionMNIST:
    x_train: np.ndarray  # (60000, 28, 28) uint8
    y_train: np.ndarray  # (60000,) int64
    x_test: np.ndarray
    y_test: np.ndarray
    source: Source
    checksums: dict[str, str]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fmlab" / "fashion-mnist"


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in FILES.values())


def _download(folder: Path, mirror: str, checksums: dict[str, str]) -> None:
    """Fetch all four files to temp files, verify each, and only then rename them into place."""
    folder.mkdir(parents=True, exist_ok=True)
    staged: dict[Path, str] = {}
    try:
        base = mirror if mirror.endswith("/") else mirror + "/"
        for name in FILES.values():
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
            staged[folder / name] = tmp
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(base + name, timeout=30) as resp:
                shutil.copyfileobj(resp, out, 1 << 20)
            try:
                idx.read(tmp, checksums[name], SIZES[name])
            except DataError as exc:
                raise type(exc)(f"download of {base}{name} rejected, nothing kept: {exc}") from None
        for target, tmp in staged.items():
            os.replace(tmp, target)
    finally:
        for tmp in staged.values():
            if os.path.exists(tmp):
                os.unlink(tmp)


def locate(
    data_dir: str | Path | None = None,
    *,
    download: bool = True,
    mirror: str | None = None,
    checksums: dict[str, str] = CHECKSUMS,
) -> Source:
    """Find the folder holding the four files, downloading into the cache as a last resort."""
    for given, origin in ((data_dir, "--data-dir"), (os.environ.get("FMLAB_DATA_DIR"), "$FMLAB_DATA_DIR")):
        if given:
            folder = Path(given).expanduser()
            if folder.exists() and not folder.is_dir():
                raise DataNotFoundError(f"{origin} {folder} is a file, not a folder; point it at the folder with "
                                        "the four .gz files")
            if not _complete(folder):
                missing = [n for n in FILES.values() if not (folder / n).is_file()]
                raise DataNotFoundError(
                    f"{origin} {folder}: missing {', '.join(missing)}; point it at the folder with the four .gz files"
                )
            return Source(folder, origin)
    for folder, origin in ((cache_dir(), "cache"), *((d, "system") for d in SYSTEM_DIRS)):
        if _complete(folder):
            return Source(folder, origin)
    mirror = mirror or os.environ.get("FMLAB_MIRROR") or MIRROR
    if download:
        try:
            _download(cache_dir(), mirror, checksums)
            return Source(cache_dir(), "download")
        except (OSError, http.client.HTTPException, ValueError) as exc:  # URLError is an OSError
            if isinstance(exc, urllib.error.HTTPError):
                reason = f"HTTP {exc.code} {exc.reason} for {exc.url}"
            else:
                reason = getattr(exc, "reason", exc)
            raise DataNotFoundError(
                f"Fashion-MNIST not found and download from {mirror} failed ({reason}); "
                "provide it with `apt-get install dataset-fashion-mnist`, "
                "`--data-dir DIR` / $FMLAB_DATA_DIR pointing at the four .gz files, "
                f"or by copying them into {cache_dir()}"
            ) from None
    raise DataNotFoundError(
        "Fashion-MNIST not found; install `dataset-fashion-mnist`, pass --data-dir, "
        f"or copy the files into {cache_dir()}"
    )


def _check_pair(images: np.ndarray, labels: np.ndarray, name: str) -> None:
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise IdxShapeError(f"{name}: expected uint8 images of shape (N, 28, 28), got {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise IdxShapeError(f"{name}: labels of shape {labels.shape} do not match {len(images)} images")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise IdxShapeError(f"{name}: labels outside 0..9")


def load(
    data_dir: str | Path | None = None,
    *,
    download: bool = True,
    mirror: str | None = None,
    checksums: dict[str, str] = CHECKSUMS,
) -> FashionMNIST:
    """Locate, verify and read the four files into memory."""
    source = locate(data_dir, download=download, mirror=mirror, checksums=checksums)
    arrays = {}
    for key, name in FILES.items():
        arrays[key] = idx.read(source.path / name, checksums.get(name), SIZES[name])
    for part in ("train", "test"):
        names = f"{source.path}/{{{FILES[f'{part}_images']}, {FILES[f'{part}_labels']}}}"
        _check_pair(arrays[f"{part}_images"], arrays[f"{part}_labels"], names)
    return FashionMNIST(
        x_train=arrays["train_images"],
        y_train=arrays["train_labels"].astype(np.int64),
        x_test=arrays["test_images"],
        y_test=arrays["test_labels"].astype(np.int64),
        source=source,
        checksums={name: checksums.get(name, "") for name in FILES.values()},
    )


__all__ = ["CHECKSUMS", "CLASS_NAMES", "FILES", "DataError", "FashionMNIST", "Source", "load", "locate"]
