"""fmlab: reproducible comparative studies of image classifiers on Fashion-MNIST."""

__version__ = "0.1.0"
