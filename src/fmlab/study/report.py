"""The study report: one self-contained HTML page (figures embedded) and a Markdown twin."""

from __future__ import annotations

import base64
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2

from fmlab import models
from fmlab.config import TrainConfig
from fmlab.data import CLASS_NAMES
from fmlab.errors import FmlabError
from fmlab.evaluation import robustness
from fmlab.runs import RunDir, RunDirError, StudyDir, resolve
from fmlab.study import findings
from fmlab.study.plan import with_tuned
from fmlab.version import __version__

FIGURES = {
    "training_curves": "Training curves",
    "confusion_matrix": "Confusion matrix",
    "roc": "One-vs-rest ROC",
    "reliability": "Reliability diagram",
    "mistakes": "Most confident mistakes",
}


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("fmlab.study", "templates"),
        autoescape=True,  # names and titles come from study files: the Markdown twin is escaped like the HTML
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


# how a run is executed, not what it trains: a baseline differing only in these is its model's recipe
EXECUTION = {"seed", "threads", "precision"}


def fit_diagnosis(layout: StudyDir, family: str, model: str, run: RunDir) -> str:
    """The diagnosis of `run` against its model's recipe, and against the recipe's own curves on the same seed when
    the family's baseline is that recipe."""
    recipe, seed = resolve([("recipe", {"model": model})]), run.read_spec()[0].seed
    baseline = layout.trial(family, "baseline", seed)
    same = baseline.read_spec()[0].model_dump(exclude=EXECUTION) == recipe.model_dump(exclude=EXECUTION)
    return findings.fit_diagnosis(run.read_history(), recipe.epochs, baseline.read_history() if same else None)


def settings(spec: TrainConfig) -> dict[str, Any]:
    """What a trial trained with, in full: its model's arguments, the optimiser, rate, batch and epochs, and every
    other setting off TrainConfig's defaults (the seed aside: the configuration is the same for each seed)."""
    changed = spec.model_dump(exclude_defaults=True, exclude={"model", "model_args", "seed"})
    return {**spec.model_args, **{k: v for k, v in spec if k in ("optimizer", "lr", "batch_size", "epochs")
                                  or k in changed}}


def wall_time(summary: dict[str, Any]) -> str:
    """The header's clause on time: the study's wall time, or, when this run reused finished trials, what it
    trained in how long (the seconds it took are not the study's)."""
    wall_s, reused = summary.get("wall_s"), summary.get("reused", 0)
    if wall_s is None:
        return ""
    if not reused:
        return f"; study wall time {wall_s:.0f} s"
    trials = sum(row["seeds"] for row in summary["rows"])
    return (f"; this run trained {trials - reused} of {trials} trials in {wall_s:.0f} s "
            "(the others were finished before)")


def context(out: str | Path) -> dict[str, Any]:
    """Everything the report shows, read from the study folder."""
    layout = StudyDir(out)
    summary, study = layout.read_summary(), with_tuned(layout.read_study(), layout.read_tune_summary())

    def rel(path: Path) -> str:
        return path.relative_to(layout.path).as_posix()

    families = []
    for fam_name, fam in study.families.items():
        spec = models.get(fam.model)
        variant = summary["best"][fam_name]
        run = layout.trial(fam_name, variant, study.seeds[0])
        ev = layout.comparison.run(fam_name).read_metrics()
        row = next(r for r in summary["rows"] if r["family"] == fam_name and r["variant"] == variant)
        families.append({
            "name": fam_name, "title": fam.title or fam_name, "model": fam.model, "variant": variant,
            "description": spec.description, "mechanism": findings.MECHANISM[spec.family], "row": row,
            "settings": settings(run.read_spec()[0]), "eval": ev,
            "fit": fit_diagnosis(layout, fam_name, fam.model, run),
            "classes": findings.class_findings(ev, CLASS_NAMES), "run": rel(run.path),
            "figures": [(rel(shown.figure(name)), title) for name, title in FIGURES.items()
                        if (shown := layout.comparison.run(fam_name)).figure(name).is_file()],
        })
    comparison = layout.comparison.read() if layout.comparison.figure.is_file() else None
    pairs = [c for c in summary["comparisons"] if c["kind"] == "pair"]
    return {
        "study": study.model_dump(), "summary": summary, "families": families, "pct": findings.pct,
        "ci": findings.ci_text, "ci_range": findings.ci_range,
        "headline": findings.headline(summary["rows"], summary["best"]),
        "pairs": pairs, "n_tests": len(summary["comparisons"]),
        "vs_baseline": {(c["a"]): c for c in summary["comparisons"] if c["kind"] == "variant_vs_baseline"},
        "sensitivity": [rel(layout.sensitivity(f)) for f in study.families if layout.sensitivity(f).is_file()],
        "comparison": comparison, "comparison_view": rel(layout.comparison.figure) if comparison else None,
        "robustness_figure": rel(layout.comparison.extra("robustness")) if comparison else None,
        "agreement": findings.agreement_findings(study, comparison) if comparison else [],
        "robustness": [robustness.sentence(f["title"], comparison["robustness"][f["name"]]) for f in families
                       ] if comparison else [],
        "class_names": CLASS_NAMES, "tune": layout.read_tune_summary(), "tune_dir": rel(layout.tune),
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "version": __version__,
        "machine": f"{platform.machine()}, {platform.system()}, Python {platform.python_version()}",
        "wall_time": wall_time(summary),
    }


def write_report(out: str | Path) -> Path:
    """Render the HTML report (figures embedded as data URIs) and its Markdown twin (figures linked)."""
    layout = StudyDir(out)
    try:
        ctx = context(layout.path)
    except (KeyError, TypeError, ValueError, StopIteration) as exc:
        raise RunDirError(f"{layout.path}: the study's results are incomplete or damaged ({type(exc).__name__}: "
                          f"{str(exc)[:80]}); run `fmlab study run` on it again") from None
    env = _env()

    def embed(rel: str) -> str:
        return "data:image/png;base64," + base64.b64encode((layout.path / rel).read_bytes()).decode()

    html = env.get_template("report.html.j2").render(**ctx, img=embed)
    markdown = env.get_template("report.md.j2").render(**ctx, img=lambda rel: rel)
    return layout.write_report(html, markdown)


def write_progress(out: str | Path, study: Any, trials: list[Any], done: set[int], eta: str | None) -> Path:
    """The report while a study runs: which trials finished and their single-trial numbers, marked "in progress:
    n of N"; the full report replaces it at the end."""
    layout = StudyDir(out)
    rows = []
    for i, t in enumerate(trials):
        row = {"family": t.family, "variant": t.variant, "seed": t.seed, "status": "waiting", "accuracy": "",
               "val": "", "train_s": ""}
        if i in done:
            metrics = layout.trial(t.family, t.variant, t.seed).read_metrics()
            val = metrics["best_val_acc"]
            row.update(status=metrics["status"], accuracy=findings.pct(metrics["test_acc"]),
                       val="" if val is None else findings.pct(val), train_s=f"{metrics['train_time_s']:.1f}")
        rows.append(row)
    html = _env().get_template("progress.html.j2").render(
        study=study, rows=rows, done=len(done), total=len(trials), eta=eta, version=__version__,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))
    return layout.write_progress(html)


BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def write_pdf(out: str | Path, timeout_s: float = 180.0) -> Path:
    """The PDF of the HTML report, printed by headless Chromium (print layout: figures never split)."""
    import shutil
    import subprocess
    import tempfile

    from fmlab.io import atomic_path

    layout = StudyDir(out)
    html = layout.report
    if not html.is_file():
        raise RunDirError(f"{html}: no report; run `fmlab study report {layout.path}` first")
    browser = next((found for name in BROWSERS if (found := shutil.which(name))), None)
    if browser is None:
        raise FmlabError("--pdf needs Chromium or Chrome on the PATH (e.g. apt-get install chromium); none found")
    pdf = layout.path / StudyDir.REPORT_PDF
    with atomic_path(pdf) as tmp, tempfile.TemporaryDirectory() as profile:
        cmd = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               f"--user-data-dir={profile}", "--no-pdf-header-footer", f"--print-to-pdf={tmp}", html.as_uri()]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise FmlabError(f"{browser} did not finish the PDF in {timeout_s:.0f} s") from None
        if done.returncode != 0 or not tmp.is_file() or tmp.stat().st_size == 0:
            why = " ".join((done.stderr or "").split())[-200:]
            raise FmlabError(f"{browser} could not print the report (exit {done.returncode}: {why})")
    return pdf
