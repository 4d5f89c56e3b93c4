"""Using a trained model: read images, predict classes, export to ONNX."""

from fmlab.infer.images import ImageError, load

__all__ = ["ImageError", "load"]
