"""Wall time of a study end to end (default: configs/default.toml), per stage and per family; prints JSON.

Runs the study into a fresh directory (or, with --from DIR, reads a finished study's records) and
checks the targets: the default study, all trials + evaluation + report, in at most 15 minutes, and, given
`--recipes` (the JSON of benchmarks/time_to_accuracy.py), every family's baseline within 0.5 pp of its model's
full recipe (mean test accuracy over the seeds).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from fmlab.runs import StudyDir
from fmlab.study.run import run_study

TARGET_S = 15 * 60
FULL_STRENGTH_PP = 0.5


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


def full_strength(layout: StudyDir, recipes: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each family's baseline against its model's full recipe as time_to_accuracy.py measured it."""
    study, rows = layout.read_study(), layout.read_summary()["rows"]
    out = {}
    for family, fam in study.families.items():
        measured = recipes["results"].get(fam.model)
        if measured is None:
            continue
        baseline = next(r["accuracy"]["mean"] for r in rows if r["family"] == family and r["variant"] == "baseline")
        recipe = measured["recipe_runs"]["mean_test_acc"]
        out[family] = {"model": fam.model, "baseline_test_acc": round(baseline, 4), "recipe_test_acc": recipe,
                       "gap_pp": round(100 * (recipe - baseline), 2),
                       "meets_target": 100 * (recipe - baseline) <= FULL_STRENGTH_PP}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/default.toml")
    parser.add_argument("--from", dest="source", help="a finished study directory to read instead of running")
    parser.add_argument("--recipes", help="time_to_accuracy.py's JSON: each model's full-recipe accuracy")
    args = parser.parse_args()
    if args.source:
        study_dir = Path(args.source)
    else:
        study_dir = Path(tempfile.mkdtemp(prefix="fmlab-walltime-"))
        run_study(args.config, study_dir, log=lambda _: None)
    layout = StudyDir(study_dir)
    timings = layout.read_timings()
    study = layout.read_study()
    seeds = study.seeds
    first_trial = layout.trial(next(iter(study.families)), "baseline", seeds[0])
    strength = full_strength(layout, json.loads(Path(args.recipes).read_text())) if args.recipes else None
    wall_ok = timings["total_s"] <= TARGET_S and timings["skipped"] == 0
    print(json.dumps({
        "benchmark": "study_walltime", "study": str(args.source or args.config), "seeds": len(seeds),
        "stages_s": {k: round(v, 1) for k, v in timings.items() if k.endswith("_s")},
        "trials": timings["trials"], "skipped": timings["skipped"], "families": per_family(layout),
        "target_s": TARGET_S, "full_strength": strength,
        "meets_target": {"wall": wall_ok, "full_strength": None if strength is None else
                         all(f["meets_target"] for f in strength.values())},
        "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "machine": first_trial.read_metrics()["machine"],  # where the trials ran, also when read --from a folder
    }, indent=2))


if __name__ == "__main__":
    main()
