"""What `--device cuda` does on a CUDA machine, checked through the CLI as a user runs it; prints JSON.

Three parts, sized for a short loan of a GPU machine (`--budget` seconds in all):
- `cli`: train, interrupt and resume, evaluate, predict, export, a quick study whose NumPy FFNN trains on the CPU
  beside torch models on the GPU, the NumPy model refused with exit 2 on `--device cuda`, and whether two runs of
  the same seed give the same numbers; each entry says the exit status and the last line printed.
- `candidates`: settings for the best-accuracy preset (configs/best.toml and variations), every seed trained
  side by side on the GPU; their test accuracy says which are worth the long CPU run.
- `time_to_accuracy`: benchmarks/time_to_accuracy.py with `--device cuda`, alone on the GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEVICE = os.environ.get("FMLAB_CHECK_DEVICE", "cuda")  # cpu: a dry run of this script where no GPU is
# settings layered over configs/best.toml: (name, epochs, extra CLI arguments); docs/benchmarks/gpu_candidates.json
# holds candidates layered over the preset before it (commit 5f2a5e9)
CANDIDATES = {
    "best": (55, []),
    # how much the preset's accuracy rests on its epoch count
    "best-50": (50, []),
    "best-60": (60, []),
    # wider channels at fewer epochs: more accuracy per epoch, more CPU time per epoch (README, "Performance")
    "wide-40": (40, ["--arg", "channels=[40,80,160]"]),
}


def fmlab(*args: str, timeout: float = 600) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", "fmlab", *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"args": " ".join(args), "rc": "timeout", "s": round(time.perf_counter() - t0, 1)}
    lines = (done.stdout + done.stderr).strip().splitlines()
    return {"args": " ".join(args), "rc": done.returncode, "s": round(time.perf_counter() - t0, 1),
            "last": lines[-1] if lines else ""}


def metrics(run: Path) -> dict[str, Any]:
    try:
        return json.loads((run / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}


def interrupt_and_resume(out: Path) -> dict[str, Any]:
    """Train 4 epochs, SIGINT after the first is saved, then --resume: the run ends with 4 epochs."""
    args = ["train", "--model", "cnn", "--device", DEVICE, "--epochs", "4", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "fmlab", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    history = out / "history.csv"
    while proc.poll() is None and not (history.exists() and len(history.read_text().splitlines()) >= 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    first = {"rc": proc.wait(), "last": proc.stdout.read().strip().splitlines()[-1:]}
    resumed = fmlab("train", "--out", str(out), "--resume")
    return {"interrupted": first, "resumed": resumed, "epochs_run": metrics(out).get("epochs_run")}


def cli(work: Path) -> dict[str, Any]:
    checks: dict[str, Any] = {}
    small = ["--epochs", "2", "--train-size", "5000", "--device", DEVICE]
    checks["train"] = fmlab("train", "--model", "cnn", *small, "--out", str(work / "cnn"))
    checks["train_again"] = fmlab("train", "--model", "cnn", *small, "--out", str(work / "cnn2"))
    first, second = metrics(work / "cnn"), metrics(work / "cnn2")
    checks["same_seed_same_numbers"] = {k: [first.get(k), second.get(k)] for k in ("test_loss", "test_acc")}
    checks["metrics"] = {k: first.get(k) for k in ("device", "precision", "machine", "train_time_s")}
    checks["resume"] = interrupt_and_resume(work / "resume")
    checks["evaluate"] = fmlab("evaluate", str(work / "cnn"), "--out", str(work / "eval"))
    from PIL import Image

    from fmlab.data import load

    Image.fromarray(load().x_test[0]).save(work / "item.png")
    checks["predict"] = fmlab("predict", str(work / "cnn"), str(work / "item.png"))
    checks["export"] = fmlab("export", str(work / "cnn"), "--onnx", str(work / "cnn.onnx"), "--limit", "2000")
    checks["numpy_on_cuda_refused"] = fmlab("train", "--model", "mlp-numpy", *small, "--out", str(work / "np"))
    checks["study"] = fmlab("study", "run", str(ROOT / "configs" / "quick.toml"), "--device", DEVICE,
                            "--out", str(work / "study"))
    return checks


def candidates(work: Path, names: list[str], seeds: list[int], timeout: float) -> dict[str, Any]:
    procs = {}
    work.mkdir(parents=True, exist_ok=True)
    for name in names:
        epochs, extra = CANDIDATES[name]
        for seed in seeds:
            out = work / f"{name}-s{seed}"
            argv = [sys.executable, "-m", "fmlab", "train", "--config", str(ROOT / "configs" / "best.toml"),
                    "--device", DEVICE, "--epochs", str(epochs), "--seed", str(seed), "--out", str(out), *extra]
            procs[(name, seed)] = (subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), out)
    deadline = time.monotonic() + timeout
    for proc, _ in procs.values():
        try:
            proc.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    results: dict[str, Any] = {}
    for (name, seed), (proc, out) in procs.items():
        m, history = metrics(out), (out / "history.csv")
        rows = history.read_text().splitlines() if history.exists() else []
        entry = results.setdefault(name, {"runs": []})
        entry["runs"].append({"seed": seed, "rc": proc.returncode, "test_acc": m.get("test_acc"),
                              "train_time_s": m.get("train_time_s"), "params": m.get("params"),
                              "epochs_done": max(0, len(rows) - 1), "last_epoch": rows[-1] if len(rows) > 1 else None})
    for entry in results.values():
        accs = [r["test_acc"] for r in entry["runs"] if r["test_acc"] is not None]
        entry["mean_test_acc"] = round(sum(accs) / len(accs), 4) if accs else None
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=Path("/tmp/gpu_check"))
    parser.add_argument("--budget", type=float, default=480, help="seconds for all three parts")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--json", type=Path, help="also write the JSON here, after each part")
    parser.add_argument("--candidates", nargs="+", choices=list(CANDIDATES), default=["best", "wide-40"])
    parser.add_argument("--only-candidates", action="store_true", help="skip the CLI checks and the timing")
    args = parser.parse_args()
    start = time.monotonic()
    args.work.mkdir(parents=True, exist_ok=True)
    import torch

    report: dict[str, Any] = {"benchmark": "gpu_check", "torch": torch.__version__,
                              "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}

    def save() -> None:
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))

    if args.only_candidates:
        report["candidates"] = candidates(args.work / "candidates", args.candidates, args.seeds, args.budget)
        print(json.dumps(report, indent=2))
        return save()
    # the candidates train in the background while the CLI checks run (neither part is timed against the other)
    with subprocess.Popen([sys.executable, __file__, "--background", str(args.work), str(args.budget * 0.6),
                           ",".join(args.candidates), *map(str, args.seeds)], stdout=subprocess.PIPE, text=True) as bg:
        report["cli"] = cli(args.work / "cli")
        save()
        report["candidates"] = json.loads(bg.communicate()[0])
    save()
    left = args.budget - (time.monotonic() - start)
    try:
        done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "time_to_accuracy.py"), "--device", DEVICE,
                               "--models", "cnn", "mlp", "--seeds", "0"],
                              capture_output=True, text=True, timeout=max(10.0, left))
        report["time_to_accuracy"] = json.loads(done.stdout) if done.returncode == 0 else done.stderr[-2000:]
    except subprocess.TimeoutExpired:
        report["time_to_accuracy"] = f"not finished within the {left:.0f} s left"
    report["wall_s"] = round(time.monotonic() - start, 1)
    save()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--background"]:
        work, timeout, names, *seeds = sys.argv[2:]
        print(json.dumps(candidates(Path(work) / "candidates", names.split(","), [int(s) for s in seeds],
                                    float(timeout))))
    else:
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        main()
