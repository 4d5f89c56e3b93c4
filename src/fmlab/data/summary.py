"""A description of the data set for `fmlab data info`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fmlab.data.fashion_mnist import CLASS_NAMES, load
from fmlab.data.split import make_split


def describe(data_dir: str | Path | None = None, val_size: int = 5000, seed: int = 0) -> dict[str, Any]:
    data = load(data_dir)
    split = make_split(data, val_size=val_size, seed=seed)
    parts = {
        "train": data.y_train[split.train_idx],
        "val": data.y_train[split.val_idx],
        "test": data.y_test,
    }
    return {
        "path": str(data.source.path),
        "origin": data.source.origin,
        "files": {name: {"sha256": digest, "verified": True} for name, digest in data.checksums.items()},
        "counts": {part: len(y) for part, y in parts.items()},
        "per_class": {
            part: dict(zip(CLASS_NAMES, np.bincount(y, minlength=10).tolist(), strict=True))
            for part, y in parts.items()
        },
        "split_seed": seed,
        "pixel_mean": round(split.mean, 6),
        "pixel_std": round(split.std, 6),
    }


def render(info: dict[str, Any]) -> str:
    lines = [f"Fashion-MNIST found in {info['path']} ({info['origin']})"]
    lines += [f"  {name}  sha256 {f['sha256'][:16]}…  verified" for name, f in info["files"].items()]
    counts = info["counts"]
    lines.append(f"split (seed {info['split_seed']}): " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    lines.append(f"{'class':<12}" + "".join(f"{k:>8}" for k in counts))
    for name in CLASS_NAMES:
        lines.append(f"{name:<12}" + "".join(f"{info['per_class'][k][name]:>8,}" for k in counts))
    lines.append(f"pixel mean {info['pixel_mean']:.4f}, std {info['pixel_std']:.4f} (train split, [0, 1] scale)")
    return "\n".join(lines)
