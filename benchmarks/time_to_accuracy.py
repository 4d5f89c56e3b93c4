"""Time to accuracy: each model's registered recipe against the recipe it had before (kept here, fixed, as the
reference), trained side by side on the full 55,000-image split for several seeds; prints JSON.

Absolute seconds differ by up to 1.5x between two 2-core machines (and drift on one), so the targets are
ratios to the reference measured in the same run: cnn >= 93.0% (mean of 3 seeds) in <= 0.55x the reference's
training time, mlp >= 89.5% in <= 0.65x. `train_s` is the time in training epochs; validation after each
epoch, setup and the test pass are not in it. The reference trains in fp32 (what it did); the recipe in the
precision the machine resolves (bf16 where the CPU has AMX-BF16), or in `--precision`. The test set is used
for the final number only. `--sweep MODEL --epochs 4,8,12` trains MODEL's recipe for each epoch count
instead: where more epochs stop paying.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch

from fmlab import hardware, models
from fmlab.data import FashionMNIST, load
from fmlab.evaluation.complexity import count_macs
from fmlab.runs import resolve
from fmlab.training.fit import fit

# the recipes of the previous release (what issue 16 measures against), in fp32
REFERENCE = {
    "cnn": {"epochs": 11, "batch_size": 256, "lr": 1e-2, "warmup": 0.25, "weight_decay": 0.05, "schedule": "onecycle",
            "label_smoothing": 0.1, "augment": True, "crop": 0, "alternate_flip": False, "tta_flip": True,
            "dropout": 0.3},
    "mlp": {"epochs": 10, "batch_size": 256, "lr": 2e-3, "schedule": "onecycle", "label_smoothing": 0.1,
            "model_args": {"hidden": [512, 256]}, "dropout": 0.2},
    "mlp-numpy": {"optimizer": "adam", "lr": 1e-3, "schedule": "cosine", "epochs": 6},
    "lenet5": {"lr": 3e-3, "schedule": "onecycle", "weight_decay": 1e-4, "epochs": 4},
    "simple-cnn": {"lr": 3e-3, "schedule": "onecycle", "weight_decay": 1e-4, "epochs": 4},
    "logreg": {"lr": 3e-3, "schedule": "onecycle", "epochs": 3},
}
TARGETS = {"cnn": {"test_acc": 0.930, "time_ratio": 0.55}, "mlp": {"test_acc": 0.895, "time_ratio": 0.65}}


TRAINED: dict[str, dict[str, Any]] = {}  # by resolved spec: a recipe that is its reference trains once


def train(settings: dict[str, Any], seed: int, data: FashionMNIST, device: str = "cpu") -> dict[str, Any]:
    spec = resolve([("benchmark", {**settings, "seed": seed})])
    key = spec.model_dump_json()
    if key in TRAINED:
        return TRAINED[key]
    t0 = time.perf_counter()
    result = fit(spec, data=data, device=device, progress=False)
    TRAINED[key] = {"seed": seed, "train_s": round(result.train_time_s, 1),
                    "fit_wall_s": round(time.perf_counter() - t0, 1), "test_acc": round(result.metrics["test_acc"], 4),
                    "epochs": len(result.history), "precision": spec.precision, "spec": spec}
    return TRAINED[key]


def matmul_gflops(precision: str, device: str = "cpu", n: int = 2048, repeats: int = 10) -> float:
    """The device's sustained matmul rate in `precision`, the practical peak a training step can approach."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    (a @ b).sum().item()
    t0 = time.perf_counter()
    for _ in range(repeats):
        c = a @ b
    c.sum().item()  # waits for a GPU
    return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e9


def summary(runs: list[dict[str, Any]], n_train: int) -> dict[str, Any]:
    spec = runs[0]["spec"]
    tflop = 6 * count_macs(models.build(spec.model, **spec.model_args)) * n_train * spec.epochs / 1e12
    mean_s = statistics.mean(r["train_s"] for r in runs)
    return {"runs": [{k: v for k, v in r.items() if k != "spec"} for r in runs],
            "mean_test_acc": round(statistics.mean(r["test_acc"] for r in runs), 4), "mean_train_s": round(mean_s, 1),
            "precision": spec.precision, "epochs": spec.epochs, "training_tflop": round(tflop, 2),
            "gflops": round(1000 * tflop / mean_s, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=list(REFERENCE))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--precision", choices=["fp32", "bf16"], default=None, help="the recipes' precision")
    parser.add_argument("--sweep", help="a model whose recipe is trained for each of --epochs")
    parser.add_argument("--epochs", default="4,8,12,16")
    parser.add_argument("--device", default="cpu", help="cpu (what the targets are set on) or cuda")
    args = parser.parse_args()
    data = load()
    n_train = 55_000
    peaks = {precision: matmul_gflops(precision, args.device) for precision in ("fp32", "bf16")}
    forced = {"precision": args.precision} if args.precision else {}
    results: dict[str, Any] = {}
    if args.sweep:
        for epochs in (int(e) for e in args.epochs.split(",")):
            runs = [train({"model": args.sweep, "epochs": epochs, **forced}, s, data, args.device) for s in args.seeds]
            results[str(epochs)] = summary(runs, n_train)
    for name in [] if args.sweep else args.models:
        reference, recipe = [], []
        for seed in args.seeds:  # side by side, so a slow spell of the machine hits both alike
            reference.append(train({"model": name, "precision": "fp32", **REFERENCE[name]}, seed, data, args.device))
            recipe.append(train({"model": name, **forced}, seed, data, args.device))
        ref, new = summary(reference, n_train), summary(recipe, n_train)
        ratio = new["mean_train_s"] / ref["mean_train_s"]
        target = TARGETS.get(name)
        results[name] = {
            "recipe": models.recipe(name), "model_args": recipe[0]["spec"].model_args, "recipe_runs": new,
            "reference": REFERENCE[name], "reference_runs": ref, "time_ratio": round(ratio, 3),
            "fraction_of_matmul_peak": round(new["gflops"] / peaks[new["precision"]], 3), "target": target,
            "meets_target": None if target is None else
            new["mean_test_acc"] >= target["test_acc"] and ratio <= target["time_ratio"],
        }
    print(json.dumps({
        "benchmark": "time_to_accuracy", "sweep": args.sweep, "device": args.device, "threads": torch.get_num_threads(),
        "machine": hardware.describe(), "matmul_gflops": {k: round(v, 1) for k, v in peaks.items()},
        "torch": torch.__version__,
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
