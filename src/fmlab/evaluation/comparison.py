"""Several runs side by side: each model's checked explanation (chosen by measurement, fmlab.evaluation.trust),
the comparison view (Input | model A | model B | ...), how alike the models' maps are (against two seeds
of the same model as the reference level), and robustness to shifts, rotations and noise."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fmlab.data import CLASS_NAMES, FashionMNIST
from fmlab.evaluation import explain, plots, robustness, trust
from fmlab.evaluation.runner import (
    REPORT_PER_CLASS,
    SELECT_PER_CLASS,
    Run,
    current_device,
    evaluate_numbers,
    explanation,
    open_run,
    output_folder,
    row_labels,
    write_evaluation,
)
from fmlab.runs import ComparisonDir, RunDir

ROBUSTNESS_PER_CLASS = 200  # test images per class for the robustness curves


def unique_names(run_dirs: Sequence[Path]) -> list[str]:
    """Short distinct folder names for runs: the last path part, more parts when two collide."""
    parts = [Path(p).resolve().parts for p in run_dirs]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["-".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [f"{i}-{Path(p).name}" for i, p in enumerate(run_dirs)]


def _class_maps(run: Run, explainer: explain.Explainer, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Maps of the evidence for the true class: what agreement compares (the same question to both models)."""
    x = run.predictor.normalise(images)
    return explainer.maps(run.predictor.net.eval(), x, torch.as_tensor(labels, device=x.device), run.baseline
                          ).cpu().numpy()


def agreement_sentence(a: str, b: str, result: dict[str, Any], reference: dict[str, dict[str, Any]]) -> str:
    corr = result["rank_correlation"]
    text = (f"{a} and {b} ({result['explainers']}) agree with rank correlation {corr['mean']:.2f} (95% CI "
            f"{corr['ci_low']:.2f} to {corr['ci_high']:.2f}) and {100 * result['top_overlap']['mean']:.0f}% overlap "
            f"of their top-10% pixels on {result['images']} test images")
    levels = [f"{name}'s two seeds: {ref['rank_correlation']['mean']:.2f}" for name, ref in reference.items()]
    if not levels:
        return text + "."
    floor = min(ref["rank_correlation"]["mean"] for ref in reference.values())
    same = corr["ci_high"] >= floor
    per = result["per_class"]
    most, least = max(per, key=lambda k: per[k]["rank_correlation"]), min(per, key=lambda k: per[k]["rank_correlation"])
    verdict = ("as much as one model agrees with itself across seeds: they look at the same features" if same
               else "no more than unrelated maps would: they look at different features" if corr["ci_low"] <= 0
               else "less than one model agrees with itself across seeds: they look at partly different features")
    return (f"{text}, against {', '.join(levels)}: {verdict} (most alike on {most}, "
            f"{per[most]['rank_correlation']:.2f}; least on {least}, {per[least]['rank_correlation']:.2f}).")


def compare_runs(
    run_dirs: Sequence[str | Path | RunDir], out_dir: str | Path, data: FashionMNIST | None = None,
    *, data_dir: str | Path | None = None, seed: int = 0, disagreements: int = 6, timing_s: float = 0.5,
    figures: bool = True, references: dict[int, str | Path | RunDir] | None = None,
    names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Evaluate every run into OUT/<run name>/ (figures optional), choose and check each one's explainer, and
    write the comparison view, the maps' agreement and the robustness curves with comparison.json.
    `references` maps a run's position to another seed of the same model: the level of agreement two
    seeds of one model reach, against which two models' agreement is read. `names` name the runs (default:
    their folder names)."""
    from fmlab.data import load

    device = current_device()
    dirs = [d if isinstance(d, RunDir) else RunDir(d) for d in run_dirs]
    out = ComparisonDir(output_folder(out_dir))
    for run_dir in [*dirs, *(RunDir(r) if not isinstance(r, RunDir) else r for r in (references or {}).values())]:
        run_dir.finished()
    data = data if data is not None else load(data_dir)
    labels = data.y_test
    runs = [open_run(d, data, device) for d in dirs]
    names = list(names) if names is not None else unique_names([r.run.path for r in runs])
    evaluated = [evaluate_numbers(run, data, device, seed, timing_s, figures) for run in runs]
    analyses = [explanation(run, data, seed) for run in runs]
    report = analyses[0][1]  # the same stratified test images for every run

    base = explain.pick_per_class(labels, 1, seed)
    extra = explain.pick_disagreements([r.probs.argmax(axis=1) for r in runs], disagreements, seed, base) \
        if len(runs) > 1 else np.zeros(0, np.int64)
    idx = np.concatenate([base, extra])
    columns, models_summary = [], {}
    for name, run, evaluation, (analysis, _) in zip(names, runs, evaluated, analyses, strict=True):
        chosen = analysis.explainer
        probs = run.predictor.probs(data.x_test[idx])
        x = run.predictor.normalise(data.x_test[idx])
        shown = chosen.maps(run.predictor.net.eval(), x, torch.as_tensor(probs.argmax(1), device=x.device),
                            run.baseline).cpu().numpy()
        mark = "\n(does not explain: see report)" if not analysis.explains else ""
        label = chosen.label.replace(" (", "\n(")
        columns.append(explain.Column(f"{name}\n{label}{mark}", shown, explain.captions(probs, CLASS_NAMES),
                                      probs.argmax(axis=1) == labels[idx]))
        result = evaluation.result
        models_summary[name] = {
            "run": str(run.run.path), "model": run.name, "explanation": analysis.summary(),
            "predictions": [{"index": int(i), "pred": CLASS_NAMES[int(p.argmax())], "confidence": float(p.max())}
                            for i, p in zip(idx, probs, strict=True)],
            **{k: result[k] for k in ("accuracy", "top2_accuracy", "log_loss", "ece")},
            "macro_f1": result["averages"]["macro"]["f1"], "roc_auc_macro": result["roc_auc"]["macro"],
            **{k: result["complexity"][k] for k in ("params", "macs_per_image", "throughput_images_per_s",
                                                     "latency_ms")},
        }
    seeds = {position: open_run(ref, data, device) for position, ref in (references or {}).items()}
    sample, truth = data.x_test[report], labels[report]
    mask = trust.garment(runs[0].predictor.normalise(sample), runs[0].baseline)
    memo: dict[tuple[bool, int, str], np.ndarray] = {}

    def class_maps(reference: bool, k: int, e: explain.Explainer) -> np.ndarray:
        """Model k's (or its other seed's) maps with explainer e, computed once however many pairs use them."""
        if (reference, k, e.label) not in memo:
            memo[reference, k, e.label] = _class_maps(seeds[k] if reference else runs[k], e, sample, truth)
        return memo[reference, k, e.label]

    agreement = {}
    for (i, a), (j, b) in combinations(enumerate(names), 2):
        # one method for both (each at its own most faithful layer for it), so the maps differ by model only
        method = analyses[i][0].explainer.method
        pair = [trust.best_with(analyses[k][0].candidates, method) for k in (i, j)]
        if None in pair:  # no method in common (a CNN and an FFNN): each model's own
            pair = [analyses[k][0].explainer for k in (i, j)]
        maps = [class_maps(False, k, e) for k, e in zip((i, j), pair, strict=True)]
        result = {**trust.agreement(maps[0], maps[1], mask, truth, CLASS_NAMES, seed),
                  "explainers": " / ".join(dict.fromkeys(e.label for e in pair))}
        refs = {names[k]: trust.agreement(m, class_maps(True, k, e), mask, truth, CLASS_NAMES, seed)
                for k, e, m in zip((i, j), pair, maps, strict=True) if k in seeds}
        agreement[f"{a} vs {b}"] = {"a": a, "b": b, **result, "seed_reference": refs,
                                    "sentence": agreement_sentence(a, b, result, refs)}
    robust_idx = explain.pick_per_class(labels, ROBUSTNESS_PER_CLASS, seed + 2)
    robust = {name: robustness.robustness(lambda x, r=run: r.predictor.logits(x).argmax(1).numpy(),
                                          data.x_test[robust_idx], labels[robust_idx], seed)
              for name, run in zip(names, runs, strict=True)}
    rows = row_labels(base, labels) + row_labels(extra, labels, "disagree ")
    view = explain.heatmap_grid(
        data.x_test[idx], columns, rows,
        "What each model's prediction rests on (its explainer chosen and checked by measurement)\n"
        "(prediction and confidence below; red: wrong)",
    )
    for name, evaluation in zip(names, evaluated, strict=True):
        write_evaluation(out.run(name), evaluation)
    summary = {"runs": names, "images": {"per_class": base.tolist(), "disagreements": extra.tolist(),
                                         "explanation_sample": report.tolist(), "per_class_sample": REPORT_PER_CLASS,
                                         "select_per_class": SELECT_PER_CLASS},
               "seed": seed, "models": models_summary, "agreement": agreement, "robustness": robust}
    figures = {"comparison": view, "robustness": robustness.figure(robust)}
    out.write(summary, {name: (plots.png(fig), plots.pdf(fig)) for name, fig in figures.items()})
    return {**summary, "out_dir": str(out.path)}
