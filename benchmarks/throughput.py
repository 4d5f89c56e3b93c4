"""Training throughput: fmlab's in-memory batches vs the per-sample PIL + DataLoader pipeline.

The reference projects feed each example through a Dataset that builds a PIL image, converts it
to a tensor and normalises it, batched by a DataLoader (batch 64). fmlab indexes one uint8
tensor through its own training step (channels-last by default; the contiguous layout is timed too).
Both train the same model with the same optimiser, batch size and precision (fp32); prints JSON (medians of
repeats). A diagnostic without a target: the 6x (mlp) and 4x (LeNet-5) targets at batch 64 were retired
(issue 16) because LeNet-5's two convolutions alone cost more than a 4x budget allows; what a recipe's whole
step achieves against the matmul rate is in time_to_accuracy.py.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from statistics import median

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from fmlab import models
from fmlab.data import FashionMNIST, load
from fmlab.runs import resolve
from fmlab.training.fit import split_arrays
from fmlab.training.loop import build_learner

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


def time_fmlab(name: str, data: FashionMNIST, batch: int, n_batches: int, channels_last: bool = True) -> float:
    """fmlab's own training step (resolved spec, TorchLearner) fed by index batches of the in-memory uint8 tensor,
    doing the reference's exact work: Adam 1e-3, plain cross-entropy, fp32."""
    plain = {"optimizer": "adam", "lr": 1e-3, "schedule": "none", "label_smoothing": 0.0, "weight_decay": 0.0,
             "batch_size": batch, "precision": "fp32"}
    spec = resolve([("benchmark", {"model": name, "channels_last": channels_last, **plain})])
    device = torch.device("cpu")
    (x, y), _, (mean, std) = split_arrays(data, spec, device)
    learner = build_learner(spec, device, n_batches)
    t0, seen = time.perf_counter(), 0
    for idx in torch.randperm(len(y))[: batch * n_batches].split(batch):
        learner.train_batch((x[idx].float() / 255.0 - mean) / std, y[idx])
        seen += len(idx)
    return seen / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="each figure is the median of this many runs")
    args = parser.parse_args()
    data = load()
    x, y = data.x_train, data.y_train.astype(np.int64)
    results = {}
    for name in ("mlp", "lenet5"):
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
            "speedup": round(ours / ref, 2),
        }
    print(json.dumps({
        "benchmark": "throughput", "batch_size": args.batch_size, "batches": args.batches, "repeats": args.repeats,
        "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__, "models": results,
    }, indent=2))


if __name__ == "__main__":
    main()
