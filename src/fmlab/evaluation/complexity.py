"""Model complexity and speed: parameters, multiply-accumulates per image, size on disk, throughput, latency."""

from __future__ import annotations

import io
import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

INPUT_SHAPE = (1, 1, 28, 28)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: tuple[int, ...] = INPUT_SHAPE) -> int:
    """Multiply-accumulates of one forward pass per image, counted by forward hooks on Conv2d and Linear layers."""
    total = 0

    def conv_hook(mod: nn.Conv2d, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        per_output = (mod.in_channels // mod.groups) * math.prod(mod.kernel_size)
        total += out[0].numel() * per_output

    def linear_hook(mod: nn.Linear, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        total += out[0].numel() * mod.in_features

    handles = []
    for mod in model.modules():
        if isinstance(mod, nn.Conv2d):
            handles.append(mod.register_forward_hook(conv_hook))
        elif isinstance(mod, nn.Linear):
            handles.append(mod.register_forward_hook(linear_hook))
    device = next(model.parameters(), torch.zeros(0)).device
    try:
        with torch.inference_mode():
            model(torch.zeros(input_shape, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return int(total // input_shape[0])


def size_on_disk(model: nn.Module, checkpoint: str | Path | None = None) -> dict[str, int]:
    """Bytes of the serialised weights (state_dict) and, when given, of the checkpoint file."""
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    out = {"state_dict_bytes": buffer.getbuffer().nbytes}
    if checkpoint is not None and Path(checkpoint).is_file():
        out["checkpoint_bytes"] = Path(checkpoint).stat().st_size
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def throughput(
    model: nn.Module, device: torch.device, batch_size: int = 256, min_seconds: float = 0.5, max_batches: int = 50
) -> float:
    """Inference images/s at `batch_size` (random input, after one warm-up batch)."""
    x = torch.randn(batch_size, *INPUT_SHAPE[1:], device=device)
    with torch.inference_mode():
        model(x)
        _sync(device)
        done, start = 0, time.perf_counter()
        while done < max_batches and (done < 2 or time.perf_counter() - start < min_seconds):
            model(x)
            done += 1
        _sync(device)
        elapsed = time.perf_counter() - start
    return done * batch_size / elapsed


def latency(model: nn.Module, device: torch.device, repeats: int = 30, max_seconds: float = 1.0) -> float:
    """Median wall-clock seconds to classify one image (after 2 warm-up calls; at least 5 timed calls)."""
    x = torch.randn(INPUT_SHAPE, device=device)
    times: list[float] = []
    with torch.inference_mode():
        for _ in range(2):
            model(x)
        start = time.perf_counter()
        while len(times) < repeats and (len(times) < 5 or time.perf_counter() - start < max_seconds):
            _sync(device)
            t0 = time.perf_counter()
            model(x)
            _sync(device)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def profile(
    model: nn.Module, device: torch.device, checkpoint: str | Path | None = None,
    min_seconds: float = 0.5, repeats: int = 30,
) -> dict[str, Any]:
    """Everything the complexity comparison reports, for `model` on `device`."""
    model = model.eval().to(device)
    sizes = size_on_disk(model, checkpoint)
    return {
        "params": count_parameters(model),
        "macs_per_image": count_macs(model),
        **sizes,
        "size_mb": sizes.get("checkpoint_bytes", sizes["state_dict_bytes"]) / 2**20,
        "throughput_images_per_s": throughput(model, device, min_seconds=min_seconds),
        "throughput_batch_size": 256,
        "latency_ms": 1000 * latency(model, device, repeats, max_seconds=2 * min_seconds),
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
