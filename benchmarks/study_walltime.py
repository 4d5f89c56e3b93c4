"""Wall time of a study end to end (default: configs/default.toml), per stage and per family; prints JSON.

Runs the study into a fresh directory (or, with --from DIR, reads a finished study's records) and
checks the target: the default study, all trials + evaluation + report, in at most 15 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from collections import defaultdict
from pathlib import Path

import torch

from fmlab.runs import StudyDir
from fmlab.study.run import run_study

TARGET_S = 15 * 60


def per_family(layout: StudyDir) -> dict[str, dict[str, float]]:
    """Trials, training seconds and trial wall seconds (training + evaluation) summed per family."""
    study = layout.read_study()
    out: dict[str, dict[str, float]] = defaultdict(lambda: {"trials": 0, "train_s": 0.0, "trial_wall_s": 0.0})
    for family, fam in study.families.items():
        for variant in ("baseline", *fam.variants):
            for seed in study.seeds:
                run = layout.trial(family, variant, seed)
                row = out[family]
                row["trials"] += 1
                row["train_s"] += run.read_metrics()["train_time_s"]
                row["trial_wall_s"] += run.read_done()["wall_s"]
    return {k: {m: round(v, 1) for m, v in row.items()} for k, row in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/default.toml")
    parser.add_argument("--from", dest="source", help="a finished study directory to read instead of running")
    args = parser.parse_args()
    if args.source:
        study_dir = Path(args.source)
    else:
        study_dir = Path(tempfile.mkdtemp(prefix="fmlab-walltime-"))
        run_study(args.config, study_dir, log=lambda _: None)
    layout = StudyDir(study_dir)
    timings = layout.read_timings()
    seeds = layout.read_study().seeds
    print(json.dumps({
        "benchmark": "study_walltime", "study": str(args.source or args.config), "seeds": len(seeds),
        "stages_s": {k: round(v, 1) for k, v in timings.items() if k.endswith("_s")},
        "trials": timings["trials"], "skipped": timings["skipped"], "families": per_family(layout),
        "target_s": TARGET_S, "meets_target": timings["total_s"] <= TARGET_S and timings["skipped"] == 0,
        "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
    }, indent=2))


if __name__ == "__main__":
    main()
