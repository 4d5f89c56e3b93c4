"""`fmlab study run` and `fmlab study report`."""

from __future__ import annotations

import signal
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
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or mps (default: the study's).")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir")] = None,
) -> None:
    """Run every trial once (finished trials are skipped), evaluate, summarise and write the report."""
    from fmlab.config import load_study
    from fmlab.errors import Interrupted
    from fmlab.study.run import run_study

    study = load_study(file)
    target = out or Path("runs") / study.name
    try:
        summary = run_study(study, target, executor=executor, scheduler=scheduler, device=device,
                            data_dir=str(data_dir) if data_dir else None, log=lambda line: typer.echo(line, err=True))
    except Interrupted as exc:
        raise Interrupted(f"interrupted ({signal.Signals(exc.signum).name}); finished trials and saved epochs are "
                          f"kept, continue with: fmlab study run {file} --out {target}", exc.signum) from None
    typer.echo(f"report: {summary['report']}")


@study_app.command("report")
def study_report(directory: Annotated[Path, typer.Argument(help="A study directory.")]) -> None:
    """Re-render the HTML and Markdown report from a study folder."""
    from fmlab.study.report import write_report

    typer.echo(f"report: {write_report(directory)}")
