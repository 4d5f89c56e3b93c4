"""Evaluation wall time: `fmlab evaluate` of a `cnn` run on the full 10,000-image test set, every artifact included.

The run is a real one (the model trained one epoch on 2,000 images: timing only, not accuracy). Its test
predictions were recorded by its predictor after training, so the timed work is what evaluation adds:
checking the run folder, metrics, figures, Grad-CAM, faithfulness and the complexity measurements.
Target: under 60 s on 2 CPU cores. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from fmlab.data import load
from fmlab.evaluation import evaluate_run
from fmlab.runs import resolve
from fmlab.training.fit import fit

TARGET_S = 60.0


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
        run = Path(tmp) / "run"
        spec = resolve([("benchmark", {"model": args.model, "epochs": 1, "train_size": 2000})])
        fit(spec, run, data=data, device="cpu", progress=False)
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
