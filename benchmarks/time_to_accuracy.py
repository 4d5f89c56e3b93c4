"""Time to accuracy: each model's registered recipe (its TrainConfig defaults), trained on the full
55,000-image split for several seeds; prints JSON with training time and test accuracy per seed.

Targets (issue 8, 2-core CPU, mean of 3 seeds): mlp >= 89.5% in <= 30 s of training, cnn >= 93.0%
in <= 120 s. `train_s` is the time spent in training epochs; `fit_wall_s` adds validation after each
epoch, the final test evaluation and setup. The test set is used for the final number only.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from fmlab import models
from fmlab.data import load
from fmlab.runs import resolve
from fmlab.train.fit import fit

TARGETS = {"mlp": {"test_acc": 0.895, "train_s": 30.0}, "cnn": {"test_acc": 0.930, "train_s": 120.0}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=list(TARGETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    data = load()
    results = {}
    for name in args.models:
        runs = []
        for seed in args.seeds:
            spec = resolve([("benchmark", {"model": name, "seed": seed})])  # the model's recipe fills the rest
            t0 = time.perf_counter()
            result = fit(spec, data=data, device="cpu", progress=False)
            runs.append({"seed": seed, "train_s": round(result.train_time_s, 1),
                         "fit_wall_s": round(time.perf_counter() - t0, 1),
                         "test_acc": round(result.metrics["test_acc"], 4), "epochs": len(result.history)})
        mean_acc = statistics.mean(r["test_acc"] for r in runs)
        mean_s = statistics.mean(r["train_s"] for r in runs)
        target = TARGETS.get(name)
        results[name] = {
            "recipe": models.recipe(name), "model_args": spec.model_args,
            "runs": runs, "mean_test_acc": round(mean_acc, 4), "mean_train_s": round(mean_s, 1),
            "target": target,
            "meets_target": None if target is None else mean_acc >= target["test_acc"] and mean_s <= target["train_s"],
        }
    print(json.dumps({
        "benchmark": "time_to_accuracy", "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(), "torch": torch.__version__, "models": results,
    }, indent=2))


if __name__ == "__main__":
    main()
