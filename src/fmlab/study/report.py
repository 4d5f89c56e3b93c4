"""The study report: one self-contained report.html (figures embedded) and a report.md twin."""

from __future__ import annotations

import base64
import json
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2

import fmlab
from fmlab import models
from fmlab.data import CLASS_NAMES
from fmlab.errors import FmlabError
from fmlab.io import write_text
from fmlab.study import findings
from fmlab.study.run import trial_dir

FIGURES = {
    "training_curves.png": "Training curves",
    "confusion_matrix.png": "Confusion matrix",
    "roc.png": "One-vs-rest ROC",
    "reliability.png": "Reliability diagram",
    "mistakes.png": "Most confident mistakes",
    "attributions.png": "Attributions",
}


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("fmlab.study", "templates"),
        autoescape=jinja2.select_autoescape(["html.j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _read(path: Path) -> Any:
    return json.loads(path.read_text())


def context(out: Path) -> dict[str, Any]:
    """Everything the report shows, read from the study directory."""
    try:
        summary, study = _read(out / "summary.json"), _read(out / "study.json")
    except (OSError, ValueError):
        raise FmlabError(f"{out}: no study results (summary.json); run `fmlab study run` first") from None
    seed = study["seeds"][0]
    families = []
    for fam_name, fam in study["families"].items():
        spec = models.get(fam["model"])
        variant = summary["best"][fam_name]
        run = trial_dir(out, fam_name, variant, seed)
        ev = _read(run / "eval" / "metrics.json")
        history = [{k: float(v) for k, v in row.items()} for row in _csv_rows(run / "history.csv")]
        row = next(r for r in summary["rows"] if r["family"] == fam_name and r["variant"] == variant)
        families.append({
            "name": fam_name, "title": fam.get("title") or fam_name, "model": fam["model"], "variant": variant,
            "description": spec.description, "mechanism": findings.MECHANISM[spec.family], "row": row,
            "config": _read(run / "config.json"), "eval": ev, "fit": findings.fit_diagnosis(history),
            "classes": findings.class_findings(ev, CLASS_NAMES), "run": run.relative_to(out).as_posix(),
            "figures": [(f"{run.relative_to(out).as_posix()}/eval/{name}", title) for name, title in FIGURES.items()
                        if (run / "eval" / name).is_file()],
        })
    tune = _read(out / "tune" / "summary.json") if (out / "tune" / "summary.json").is_file() else None
    return {
        "study": study, "summary": summary, "families": families, "pct": findings.pct, "ci": findings.ci_text,
        "headline": findings.headline(summary["rows"], summary["best"]),
        "pairs": [c for c in summary["comparisons"] if c["kind"] == "pair"],
        "vs_baseline": {(c["a"]): c for c in summary["comparisons"] if c["kind"] == "variant_vs_baseline"},
        "sensitivity": sorted(p.relative_to(out).as_posix() for p in (out / "figures").glob("sensitivity_*.png")),
        "comparison": "comparison/comparison.png" if (out / "comparison" / "comparison.png").is_file() else None,
        "class_names": CLASS_NAMES, "tune": tune,
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "version": fmlab.__version__,
        "machine": f"{platform.machine()}, {platform.system()}, Python {platform.python_version()}",
        "wall_s": summary.get("wall_s"),
    }


def _csv_rows(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open() as fh:
        return list(csv.DictReader(fh))


def write_report(out: str | Path) -> Path:
    """Render report.html (figures embedded as data URIs) and report.md (figures linked)."""
    out = Path(out)
    ctx = context(out)
    env = _env()

    def embed(rel: str) -> str:
        return "data:image/png;base64," + base64.b64encode((out / rel).read_bytes()).decode()

    write_text(out / "report.html", env.get_template("report.html.j2").render(**ctx, img=embed))
    write_text(out / "report.md", env.get_template("report.md.j2").render(**ctx, img=lambda rel: rel))
    return out / "report.html"
