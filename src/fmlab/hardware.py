"""What this machine offers for training arithmetic: read once, recorded with every run."""

from __future__ import annotations

import contextlib
import functools
import platform
from pathlib import Path
from typing import Any

import torch

from fmlab.errors import ConfigError


@functools.cache
def _cpuinfo_lines() -> tuple[str, ...]:
    try:
        return tuple(Path("/proc/cpuinfo").read_text().splitlines())
    except OSError:  # not Linux
        return ()


def cpu_flags() -> frozenset[str]:
    """The CPU feature flags Linux reports (empty elsewhere)."""
    line = next((line for line in _cpuinfo_lines() if line.startswith("flags")), "")
    return frozenset(line.partition(":")[2].split())


def fast_bf16() -> bool:
    """Whether bf16 arithmetic pays here: a CUDA GPU, or a CPU with AMX-BF16 or AVX512-BF16 bf16 dot products
    (on AVX2-only CPUs bf16 is emulated, slower than fp32)."""
    return torch.cuda.is_available() or not cpu_flags().isdisjoint({"amx_bf16", "avx512_bf16"})


def autocast(precision: str | None, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on the CPU or a CUDA GPU (weights stay fp32; fmlab computes the loss in fp32), or nothing."""
    if precision != "bf16":
        return contextlib.nullcontext()
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"bf16 training runs on a CPU or a CUDA GPU, not {device.type}; set precision = 'fp32'")
    return torch.autocast(device.type, dtype=torch.bfloat16)


def describe() -> dict[str, Any]:
    """The machine a run trained on, for its metrics: CPU model, torch's kernel level, bf16 support, GPU."""
    model = next((line.partition(":")[2].strip() for line in _cpuinfo_lines() if line.startswith("model name")),
                 platform.processor() or platform.machine())
    return {"cpu": model, "capability": torch.backends.cpu.get_cpu_capability(),
            "amx_bf16": "amx_bf16" in cpu_flags(), "avx512_bf16": "avx512_bf16" in cpu_flags(),
            **({"gpu": torch.cuda.get_device_name()} if torch.cuda.is_available() else {})}

