"""Evaluation wall time: `fmlab evaluate` of a `cnn` run on the full 10,000-image test set, every artifact included.

The run directory is synthetic (untrained, seeded weights; timing only) and has no predictions.npz, so the
timed work includes inference over the whole test set as well as metrics, figures, Grad-CAM, faithfulness
and the complexity measurements. Target: under 60 s on 2 CPU cores. Prints JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from fmlab import models
from fmlab.data import load
from fmlab.evaluate import evaluate_run
from fmlab.io import write_json
from fmlab.train import checkpoint

TARGET_S = 60.0


def make_run(folder: Path, name: str, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    args = dict(models.get(name).defaults)
    model = models.build(name, **args).eval()
    config = {"model": name, "model_args": args, "seed": seed, "epochs": 10}
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint.save(folder / "checkpoint.pt", checkpoint.model_payload(model, name, args, config, (0.2860, 0.3530)))
    write_json(folder / "config.json", config)
    with open(folder / "history.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"])
        for e in range(1, 11):
            w.writerow([e, 1 / e, 1 - 0.3 / e, 1.1 / e, 1 - 0.35 / e, 1e-3, 10.0])
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load(args.data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp) / "run", args.model)
        start = time.perf_counter()
        result = evaluate_run(run, Path(tmp) / "eval", data=data)
        seconds = time.perf_counter() - start
    print(json.dumps({
        "benchmark": "eval_speed",
        "model": args.model,
        "test_images": len(data.y_test),
        "seconds": round(seconds, 2),
        "target_s": TARGET_S,
        "meets_target": seconds < TARGET_S,
        "artifacts": len(result["artifacts"]),
        "predictions_source": result["predictions_source"],
        "device": result["complexity"]["device"],
        "torch_threads": torch.get_num_threads(),
        "throughput_images_per_s": round(result["complexity"]["throughput_images_per_s"], 1),
        "latency_ms": round(result["complexity"]["latency_ms"], 3),
        "macs_per_image": result["complexity"]["macs_per_image"],
        "params": result["complexity"]["params"],
        "cpu": platform.processor() or platform.machine(),
    }, indent=2))


if __name__ == "__main__":
    main()
