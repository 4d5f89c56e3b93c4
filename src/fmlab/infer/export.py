"""Export a run's predictor to ONNX and prove the export: same scores as torch, and how fast each runs.

The ONNX graph is the whole predictor (fmlab.runs.PredictorModule): it takes "input" (batch, 1, 28, 28)
float32 pixel values in [0, 255], normalises them, runs the network and, for a model trained with flip
test-time averaging, averages the log-probabilities of the image and its mirror, returning "logits"
(batch, 10) whose argmax is the class. The batch axis is dynamic. The file is written atomically and
only after onnxruntime's outputs matched torch's within `TOLERANCE` on the test images; otherwise
nothing is left behind.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fmlab.data.fashion_mnist import CLASS_NAMES
from fmlab.errors import FmlabError
from fmlab.io import atomic_path
from fmlab.runs import Predictor, check_output, open_predictor

TOLERANCE = 1e-4
BATCH = 256


class ExportError(FmlabError):
    """The model could not be exported, or the exported graph does not reproduce torch's outputs."""


def export_onnx(
    run_dir: str | Path,
    out_path: str | Path,
    opset: int = 17,
    *,
    limit: int | None = None,
    data_dir: str | Path | None = None,
    images: np.ndarray | None = None,
) -> dict[str, Any]:
    """Export the run's model to `out_path`, verify it on the test set (or `images`), report throughput.

    `limit` checks only the first `limit` test images (tests use a few hundred); `images` replaces
    the test set with given uint8 (N, 28, 28) images.
    """
    try:
        import onnx
        import onnxruntime as ort
    except ImportError:
        raise ExportError("ONNX export needs onnx and onnxruntime: pip install 'fmlab[export]'") from None
    if not 7 <= opset <= 23:
        raise ExportError(f"--opset must be between 7 and 23, got {opset}")
    if limit is not None and limit < 1:
        raise ExportError(f"--limit must be at least 1, got {limit}")
    check_output(out_path, [run_dir])
    predictor = open_predictor(run_dir)
    name = predictor.spec.model
    if images is None:
        from fmlab.data import load

        images = load(data_dir).x_test
    images = images[:limit] if limit is not None else images
    if len(images) == 0:
        raise ExportError("no test images to verify the export with")
    with atomic_path(out_path) as tmp:
        _export(predictor.module.eval(), tmp, opset, name)
        graph = onnx.load(str(tmp))
        graph.doc_string = f"fmlab {name} classifier for Fashion-MNIST"
        meta = {"fmlab.model": name, "fmlab.opset": str(opset), "fmlab.tta_flip": str(predictor.spec.tta_flip),
                "fmlab.tta_shift": str(predictor.spec.tta_shift),
                "fmlab.input": "pixels in [0, 255], float32, (batch, 1, 28, 28); the graph normalises them",
                "fmlab.class_names": json.dumps(CLASS_NAMES)}
        for key, value in meta.items():
            graph.metadata_props.add(key=key, value=value)
        onnx.checker.check_model(graph)
        onnx.save(graph, str(tmp))
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        torch_out, torch_s = _timed(lambda x: _torch_logits(predictor, x), images)
        ort_out, ort_s = _timed(lambda x: session.run(["logits"], {"input": _pixels(x)})[0], images)
        diff = float(np.abs(torch_out - ort_out).max())
        if not diff <= TOLERANCE:
            raise ExportError(f"ONNX outputs differ from torch by {diff:.2e} (> {TOLERANCE:g}); export not written")
        dims = [d.dim_param or d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    return {
        "onnx": str(out_path),
        "model": name,
        "opset": opset,
        "input_shape": dims,
        "dynamic_batch": isinstance(dims[0], str),
        "verified_images": len(images),
        "max_abs_diff": diff,
        "tolerance": TOLERANCE,
        "same_predictions": float((torch_out.argmax(1) == ort_out.argmax(1)).mean()),
        "torch_images_per_s": round(len(images) / torch_s, 1),
        "onnxruntime_images_per_s": round(len(images) / ort_s, 1),
        "batch_size": BATCH,
        "threads": torch.get_num_threads(),
        "bytes": Path(out_path).stat().st_size,
    }


def _export(model: nn.Module, path: Path, opset: int, name: str) -> None:
    """TorchScript-based exporter (the dynamo one needs onnxscript, which fmlab does not require)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation notices
            torch.onnx.export(
                model, (torch.zeros(2, 1, 28, 28),), str(path), dynamo=False, opset_version=opset,
                input_names=["input"], output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            )
    except Exception as exc:  # the exporter fails in many ways (unsupported ops, Python-side numpy, ...)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ExportError(f"cannot export the '{name}' model to ONNX opset {opset}: {first[:200]}") from None


def _pixels(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> the graph's input: float32 pixel values (N, 1, 28, 28)."""
    return np.ascontiguousarray(images, np.float32)[:, None]


def _torch_logits(predictor: Predictor, images: np.ndarray) -> np.ndarray:
    return predictor.logits(images).numpy()


def _timed(run: Any, images: np.ndarray) -> tuple[np.ndarray, float]:
    """Outputs for all images in batches of BATCH, and the seconds that took (after one warm-up batch)."""
    run(images[:BATCH])
    start = time.perf_counter()
    out = np.concatenate([run(images[i : i + BATCH]) for i in range(0, len(images), BATCH)])
    return out, max(time.perf_counter() - start, 1e-9)
