"""Test-time averaging re-measured on trained runs: each run's checkpoint scored with every combination of
flip and shift averaging (`tta_flip`, `tta_shift`) on its validation and test images; prints JSON.

A view only helps a model trained on that transform (flips need flip training, shifts crop training), so
this re-scores the weights a run selected rather than training anew: what the averaging alone buys.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch

from fmlab import hardware
from fmlab.data import load
from fmlab.errors import FmlabError
from fmlab.evaluation.runner import open_run
from fmlab.runs import Predictor
from fmlab.training.loop import score

VIEWS = {"none": (False, False), "flip": (True, False), "shift": (False, True), "flip+shift": (True, True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", nargs="+", help="finished run folders")
    args = parser.parse_args()
    data = load()
    rows = []
    for path in args.runs:
        try:
            run = open_run(path, data, torch.device("cpu"))
        except FmlabError as exc:
            sys.exit(str(exc))
        spec, trained = run.spec, run.predictor
        sets = {"val": run.validation(data), "test": (data.x_test, data.y_test)}
        scores = {}
        for name, (flip, shift) in VIEWS.items():
            predictor = Predictor(trained.net, spec.model_copy(update={"tta_flip": flip, "tta_shift": shift}),
                                  trained.module.mean, trained.module.std)
            scores[name] = {part: round(score(predictor.logits(x), torch.as_tensor(y).long())[1], 4)
                            for part, (x, y) in sets.items()}
        rows.append({"run": path, "seed": spec.seed, "trained": {"tta_flip": spec.tta_flip,
                                                                 "tta_shift": spec.tta_shift}, "acc": scores})
    print(json.dumps({
        "benchmark": "tta_views", "machine": hardware.describe(), "torch": torch.__version__, "runs": rows,
        "mean_acc": {name: {part: round(statistics.mean(r["acc"][name][part] for r in rows), 4)
                            for part in ("val", "test")} for name in VIEWS},
    }, indent=2))


if __name__ == "__main__":
    main()
