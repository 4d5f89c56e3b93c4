"""Fashion-MNIST: verified IDX files, splits, batches and batched augmentation."""

from fmlab.data.fashion_mnist import CLASS_NAMES, FashionMNIST, load, locate
from fmlab.data.split import Split, make_split

__all__ = ["CLASS_NAMES", "FashionMNIST", "Split", "load", "locate", "make_split"]
