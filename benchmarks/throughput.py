"""Training throughput: fmlab's in-memory batches vs the per-sample PIL + DataLoader pipeline.

The reference projects feed each example through a Dataset that builds a PIL image, converts it
to a tensor and normalises it, batched by a DataLoader (batch 64). fmlab indexes one uint8
tensor through its own training step (channels-last by default; the contiguous layout is timed too).
Both train the same model with the same optimiser and batch size; prints JSON (medians of repeats).
Also reports the `cnn` training step's GFLOP/s against this CPU's measured matmul GFLOP/s.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from statistics import median
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from fmlab import models
from fmlab.data import FashionMNIST, load
from fmlab.evaluate.complexity import count_macs
from fmlab.runs import resolve
from fmlab.train.fit import split_arrays
from fmlab.train.loop import build_learner

MEAN, STD = 0.2860, 0.3530


class PilDataset(Dataset):
    """What torchvision's FashionMNIST + ToTensor + Normalize do, one example at a time."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = Image.fromarray(self.x[i], mode="L")
        t = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).unsqueeze(0)
        return (t - MEAN) / STD, int(self.y[i])


def step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    opt.step()


def time_reference(name: str, x: np.ndarray, y: np.ndarray, batch: int, n_batches: int) -> float:
    torch.manual_seed(0)
    model = models.build(name)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    loader = DataLoader(PilDataset(x, y), batch_size=batch, shuffle=True)
    t0, seen = time.perf_counter(), 0
    for i, (xb, yb) in enumerate(loader):
        if i == n_batches:
            break
        step(model, opt, xb, yb)
        seen += len(xb)
    return seen / (time.perf_counter() - t0)


def time_fmlab(name: str, data: FashionMNIST, batch: int, n_batches: int, channels_last: bool = True,
               **recipe: Any) -> float:
    """fmlab's own training step (resolved spec, TorchLearner) fed by index batches of the in-memory uint8 tensor.

    Without `recipe`, the reference's exact work: Adam 1e-3, plain cross-entropy."""
    plain = {"optimizer": "adam", "lr": 1e-3, "schedule": "none", "label_smoothing": 0.0, "weight_decay": 0.0,
             "batch_size": batch}
    spec = resolve([("benchmark", {"model": name, "channels_last": channels_last, **(recipe or plain)})])
    device = torch.device("cpu")
    (x, y), _, (mean, std) = split_arrays(data, spec, device)
    learner = build_learner(spec, device, n_batches)
    t0, seen = time.perf_counter(), 0
    for idx in torch.randperm(len(y))[: batch * n_batches].split(batch):
        learner.train_batch((x[idx].float() / 255.0 - mean) / std, y[idx])
        seen += len(idx)
    return seen / (time.perf_counter() - t0)


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    """This CPU's sustained float32 matmul rate, the practical peak a training step can approach."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e9


def cnn_step_gflops(data: FashionMNIST, n_batches: int) -> dict[str, Any]:
    """GFLOP/s of the `cnn` training step at its recipe batch size: 3 x forward MACs x 2 per image
    (forward, input gradient and weight gradient each cost about one forward)."""
    spec = resolve([("benchmark", {"model": "cnn"})])
    flops = 3 * 2 * count_macs(models.build("cnn", **spec.model_args))
    recipe = spec.model_dump(include={"batch_size", "optimizer", "lr", "label_smoothing"})
    images_per_s = median(time_fmlab("cnn", data, spec.batch_size, n_batches, **recipe) for _ in range(3))
    return {"model_args": spec.model_args, "batch_size": spec.batch_size, "images_per_s": round(images_per_s),
            "train_gflop_per_image": round(flops / 1e9, 4), "gflops": round(images_per_s * flops / 1e9, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="each figure is the median of this many runs")
    args = parser.parse_args()
    data = load()
    x, y = data.x_train, data.y_train.astype(np.int64)
    targets = {"mlp": 6.0, "lenet5": 4.0}
    results = {}
    for name, target in targets.items():
        time_fmlab(name, data, args.batch_size, 20)  # warm-up
        runs: dict[str, list[float]] = {"ref": [], "ours": [], "contiguous": []}
        for _ in range(args.repeats):  # interleaved, so a slow spell of the machine hits all three alike
            runs["ref"].append(time_reference(name, x, y, args.batch_size, args.batches))
            runs["ours"].append(time_fmlab(name, data, args.batch_size, args.batches))
            runs["contiguous"].append(
                time_fmlab(name, data, args.batch_size, args.batches, channels_last=False))
        ref, ours, contiguous = (median(runs[k]) for k in ("ref", "ours", "contiguous"))
        results[name] = {
            "reference_images_per_s": round(ref), "fmlab_images_per_s": round(ours),
            "fmlab_contiguous_images_per_s": round(contiguous), "channels_last_gain": round(ours / contiguous, 2),
            "speedup": round(ours / ref, 2), "target": target, "meets_target": ours / ref >= target,
        }
    peak = matmul_gflops()
    cnn = cnn_step_gflops(data, 60)
    cnn["fraction_of_matmul_peak"] = round(cnn["gflops"] / peak, 3)
    print(json.dumps({
        "benchmark": "throughput", "batch_size": args.batch_size, "batches": args.batches, "repeats": args.repeats,
        "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__, "models": results, "matmul_gflops": round(peak, 1), "cnn_training_step": cnn,
    }, indent=2))


if __name__ == "__main__":
    main()
