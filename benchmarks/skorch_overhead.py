"""What the scikit-learn wrapper costs: an epoch of FmlabClassifier (skorch) vs `fmlab.train.fit`.

Both train the same model on the same training images with the same optimiser and batch size,
from in-memory uint8 batches normalised on the fly. Each run trains `--epochs` epochs and the last
epoch's training time is kept (the first pays one-off costs); runs alternate, and the median
(typical) and fastest (least disturbed by other load on the machine) epochs are compared.
Prints JSON; the target is an overhead under 15%.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics

import torch

from fmlab import models
from fmlab.config import TrainConfig
from fmlab.data import load, make_split
from fmlab.train.loop import fit
from fmlab.tune.skorch_model import FmlabClassifier


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="lenet5")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--train-size", type=int, default=10000)
    ap.add_argument("--val-size", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is steadier on a busy machine)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    data = load(args.data_dir)
    # the wrapper's exact work: default architecture, constant-rate AdamW, plain cross-entropy, no augmentation
    cfg = TrainConfig(model=args.model, model_args=models.get(args.model).defaults, optimizer="adamw", lr=1e-3,
                      schedule="none", label_smoothing=0.0, weight_decay=0.0, augment=False,
                      batch_size=args.batch_size, epochs=args.epochs, train_size=args.train_size,
                      val_size=args.val_size, device=args.device, amp=False)
    split = make_split(data, cfg.val_size, cfg.split_seed, cfg.train_size)
    x, y = data.x_train[split.train_idx], data.y_train[split.train_idx]
    n = len(y)
    fmlab_s, skorch_s = [], []
    for _ in range(args.repeats):
        result = fit(cfg, data=data, progress=False, evaluate_test=False)
        fmlab_s.append(result.history[-1]["seconds"])
        net = FmlabClassifier(args.model, optimizer="adamw", lr=1e-3, batch_size=args.batch_size,
                              max_epochs=args.epochs, device=args.device)
        net.fit(x, y)
        skorch_s.append(net.history[-1, "dur"])
    fmlab_ips, skorch_ips = n / statistics.median(fmlab_s), n / statistics.median(skorch_s)
    print(json.dumps({
        "benchmark": "skorch_overhead", "model": args.model, "batch_size": args.batch_size, "train_images": n,
        "device": args.device, "torch_threads": torch.get_num_threads(), "repeats": args.repeats,
        "fmlab_images_per_s": round(fmlab_ips, 1), "skorch_images_per_s": round(skorch_ips, 1),
        "overhead_pct": round(100 * (fmlab_ips / skorch_ips - 1), 2), "target_pct": 15,
        "overhead_pct_fastest": round(100 * (min(skorch_s) / min(fmlab_s) - 1), 2),
        "fmlab_epoch_s": [round(s, 3) for s in fmlab_s], "skorch_epoch_s": [round(s, 3) for s in skorch_s],
        "torch": torch.__version__, "machine": f"{platform.machine()}, {platform.system()}",
    }, indent=2))


if __name__ == "__main__":
    main()
