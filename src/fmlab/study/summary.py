"""Study outputs: per-variant mean/std/CI over seeds, significance tests, sensitivity plots."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from typing import Any

import numpy as np

from fmlab.config import StudyConfig
from fmlab.evaluation import stats
from fmlab.io import csv_cell
from fmlab.runs import RunDir, StudyDir
from fmlab.study.plan import BASELINE, resolve_ref, variant_names, varied_keys

# no inference speed: trials run two at a time, so a trial's own timing measures the other's load (the report's
# cost table and the comparison time each family's best variant alone, after the trials)
METRICS = ("accuracy", "macro_f1", "macro_auc", "ece", "train_time_s", "params", "macs", "best_val_acc")


def trial_record(run: RunDir) -> dict[str, Any]:
    """The numbers of one finished trial: training metrics and evaluation metrics, flattened."""
    train, ev = run.read_metrics(), run.eval.read_metrics()
    cx = ev["complexity"]
    return {
        "accuracy": ev["accuracy"], "macro_f1": ev["averages"]["macro"]["f1"], "macro_auc": ev["roc_auc"]["macro"],
        "ece": ev["ece"], "train_time_s": train["train_time_s"], "params": cx["params"], "macs": cx["macs_per_image"],
        "best_val_acc": train["best_val_acc"], "status": train["status"],
    }


def correctness(run: RunDir) -> np.ndarray:
    predictions = run.read_predictions()
    return predictions.logits.argmax(1) == predictions.labels


def summarise(study: StudyConfig, layout: StudyDir, wall_s: float | None = None, reused: int = 0) -> dict[str, Any]:
    """Aggregate the trials over seeds and compare them; `wall_s` is the time this run spent on trials, having
    reused `reused` finished ones."""
    rows, correct = [], {}
    for family, fam in study.families.items():
        changes = varied_keys(study, family)
        for variant in variant_names(study, family):
            runs = [layout.trial(family, variant, s) for s in study.seeds]
            records = [trial_record(run) for run in runs]
            correct[(family, variant)] = np.stack([correctness(run) for run in runs])
            statuses = Counter(r["status"] for r in records)
            row: dict[str, Any] = {
                "family": family, "title": fam.title or family, "model": fam.model, "variant": variant,
                "changes": changes.get(variant, {}), "seeds": len(records), "status": dict(sorted(statuses.items())),
                "diverged": statuses["diverged"],
            }
            for metric in METRICS:
                row[metric] = stats.mean_ci([r[metric] for r in records])
            rows.append(row)
    best = _best_per_family(rows)
    comparisons = []
    for row in rows:
        if row["variant"] != BASELINE:
            a, b = (row["family"], row["variant"]), (row["family"], BASELINE)
            comparisons.append({"kind": "variant_vs_baseline", **stats.compare(
                correct[a], correct[b], f"{a[0]}/{a[1]}", f"{b[0]}/{b[1]}")})
    for pair in study.compare:
        (fa, va), (fb, vb) = resolve_ref(study, pair.a), resolve_ref(study, pair.b)
        a, b = (fa, va or best[fa]), (fb, vb or best[fb])
        comparisons.append({"kind": "pair", "title": pair.title, **stats.compare(
            correct[a], correct[b], f"{a[0]}/{a[1]}", f"{b[0]}/{b[1]}")})
    summary = {
        "study": study.name, "seeds": study.seeds, "wall_s": wall_s, "reused": reused, "rows": rows, "best": best,
        "comparisons": stats.correct(comparisons),  # every test of the study corrected together (Holm)
    }
    layout.write_summary(summary, _csv(rows))
    _sensitivity_plots(study, rows, layout)
    return summary


def _best_per_family(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Best variant per family by mean validation accuracy: the test set plays no part in selection."""
    best: dict[str, tuple[float, str]] = {}
    for row in rows:
        score = row["best_val_acc"]["mean"]
        score = -1.0 if score is None else score  # never validated (diverged at once): chosen last
        if row["family"] not in best or score > best[row["family"]][0]:
            best[row["family"]] = (score, row["variant"])
    return {family: variant for family, (_, variant) in best.items()}


def changes_text(changes: dict[str, Any] | list[Any]) -> str:
    """A variant's settings changed from its baseline, as `key=value; ...` (empty for the baseline)."""
    return "; ".join(f"{k}={json.dumps(v)}" for k, v in dict(changes).items())


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    header = ["family", "model", "variant", "changes", "seeds", "diverged"]
    header += [f"{m}_{s}" for m in METRICS for s in ("mean", "std", "ci_low", "ci_high")]
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        values = [csv_cell(changes_text(row["changes"]) if k == "changes" else row[k]) for k in header[:6]]
        values += ["" if row[m][s] is None else f"{row[m][s]:.6g}"
                   for m in METRICS for s in ("mean", "std", "ci_low", "ci_high")]
        writer.writerow(values)
    return buf.getvalue()


def _sensitivity_plots(study: StudyConfig, rows: list[dict[str, Any]], layout: StudyDir) -> None:
    """Test accuracy (mean +- std over seeds) against each hyperparameter a family varies."""
    from fmlab.evaluation.plots import new_figure, pdf, png

    for family, fam in study.families.items():
        fam_rows = {r["variant"]: r for r in rows if r["family"] == family}
        keys = sorted({k for r in fam_rows.values() for k in r["changes"]})
        if not keys:
            continue
        fig = new_figure(3.6 * len(keys), 3.2, layout="tight")
        axes = fig.subplots(1, len(keys), squeeze=False)
        base = layout.trial(family, BASELINE, study.seeds[0]).read_spec()[0]
        for ax, key in zip(axes[0], keys, strict=True):
            # the baseline's resolved value (its recipe's when the study sets none); `dropout` is a model argument
            base_value = base.model_args.get(key) if key == "dropout" else getattr(base, key, "default")
            points = [(base_value, fam_rows[BASELINE])] + [
                (r["changes"][key], r) for r in fam_rows.values() if key in r["changes"]
            ]
            labels = [str(v) for v, _ in points]
            means = [100 * r["accuracy"]["mean"] for _, r in points]
            errs = [100 * (r["accuracy"]["std"] or 0.0) for _, r in points]  # no bar with one seed
            numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v, _ in points)
            xs = [float(v) for v, _ in points] if numeric else list(range(len(points)))
            order = np.argsort(xs)
            ax.errorbar(np.array(xs)[order], np.array(means)[order], yerr=np.array(errs)[order], marker="o", capsize=3)
            if numeric and min(xs) > 0 and max(xs) / min(xs) >= 10:
                ax.set_xscale("log")
            if not numeric:
                ax.set_xticks(xs, labels)
            ax.set_xlabel(key)
            ax.set_ylabel("test accuracy (%)")
            ax.grid(alpha=0.3)
        fig.suptitle(f"{fam.title or family}: sensitivity (baseline and variants, mean ± std over seeds)")
        layout.write_sensitivity(family, png(fig, dpi=110), pdf(fig))
