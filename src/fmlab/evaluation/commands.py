"""`fmlab evaluate`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


def _line(name: str, model: str, r: dict[str, Any], explanation: dict[str, Any]) -> str:
    return f"{name}: {model}, accuracy {r['accuracy']:.2%}, top-2 {r['top2_accuracy']:.2%}, ECE {r['ece']:.4f}; " \
           f"{explanation['verdict']}"


def evaluate(
    run_dirs: Annotated[
        list[Path], typer.Argument(metavar="RUN_DIR", help="Run directories written by `fmlab train`.")
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="Output folder (default: RUN_DIR/eval for one run, PARENT/comparison for several)."),
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Folder holding the four Fashion-MNIST .gz files.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for choosing the images shown in the heatmaps.")] = 0,
) -> None:
    """Metrics, calibration, classification report, figures, complexity and a checked explanation (its method
    and layer chosen by measurement) for each run; with several runs, also the side-by-side comparison view,
    the agreement of the models' maps and their robustness to shifts, rotations and noise."""
    from fmlab import api

    if len(run_dirs) == 1:
        r = api.evaluate(run_dirs[0], out, data_dir=data_dir, seed=seed)
        typer.echo(_line(run_dirs[0].name, r["model"], r, r["explanation"]))
        typer.echo(f"-> {r['out_dir']}")
        return
    summary = api.compare(run_dirs, out, data_dir=data_dir, seed=seed)
    for name, r in summary["models"].items():
        typer.echo(_line(name, r["model"], r, r["explanation"]))
    for pair in summary["agreement"].values():
        typer.echo(pair["sentence"])
    typer.echo(f"-> {summary['out_dir']} (the comparison view, its numbers, one folder per run)")
