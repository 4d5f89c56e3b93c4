"""`fmlab study run` and `fmlab study report`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

study_app = typer.Typer(no_args_is_help=True, help="Run a declarative study and write its report.")


@study_app.command("run")
def study_run(
    file: Annotated[Path, typer.Argument(help="Study TOML file, e.g. configs/default.toml.")],
    out: Annotated[Path | None, typer.Option(help="Study directory (default runs/<study name>).")] = None,
    executor: Annotated[str, typer.Option(help="local or dask.")] = "local",
    scheduler: Annotated[str, typer.Option(help="Dask scheduler tcp://host:8786, or local:N.")] = "local:2",
    data_dir: Annotated[Path | None, typer.Option("--data-dir")] = None,
) -> None:
    """Run every trial once (finished trials are skipped), evaluate, summarise and write report.html."""
    from fmlab.config import load_study
    from fmlab.study.run import run_study

    study = load_study(file)
    target = out or Path("runs") / study.name
    run_study(study, target, executor=executor, scheduler=scheduler,
              data_dir=str(data_dir) if data_dir else None, log=lambda line: typer.echo(line, err=True))
    typer.echo(f"report: {target / 'report.html'}")


@study_app.command("report")
def study_report(directory: Annotated[Path, typer.Argument(help="A study directory.")]) -> None:
    """Re-render report.html and report.md from a study directory."""
    from fmlab.study.report import write_report

    typer.echo(f"report: {write_report(directory)}")
