"""Fashion-MNIST: verified IDX files, splits, batches and batched augmentation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fmlab.data.fashion_mnist import CLASS_NAMES, FashionMNIST, load, locate

if TYPE_CHECKING:
    from fmlab.data.split import Split, make_split

__all__ = ["CLASS_NAMES", "FashionMNIST", "Split", "load", "locate", "make_split"]


def __getattr__(name: str) -> Any:
    # split.py pulls in torch and scikit-learn; import it only when asked, so that
    # `fmlab data verify` and other light users start quickly.
    if name in ("Split", "make_split"):
        from fmlab.data import split

        return getattr(split, name)
    raise AttributeError(f"module 'fmlab.data' has no attribute {name!r}")
