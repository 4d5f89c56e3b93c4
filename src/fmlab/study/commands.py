"""`fmlab study run` and `fmlab study report`."""

from __future__ import annotations

import shutil
import signal
import sys
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
    track: Annotated[str | None, typer.Option(help="MLflow tracking URI (default: the study's [track] uri).")] = None,
) -> None:
    """Run every trial once (finished trials are skipped), evaluate, summarise and write the report."""
    from fmlab import api
    from fmlab.config import load_study
    from fmlab.errors import Interrupted

    study = load_study(file)
    target = out or Path("runs") / study.name
    tty = sys.stderr.isatty()  # a bar redrawn in place on a terminal; plain lines in a log file or pipe

    def log(line: str) -> None:
        typer.echo(("\r\x1b[2K" if tty else "") + line, err=True)

    def bar(text: str) -> None:
        sys.stderr.write("\r\x1b[2K" + text[: shutil.get_terminal_size().columns - 1])
        sys.stderr.flush()

    try:
        result = api.run_study(study, target, executor=executor, scheduler=scheduler, device=device,
                               data_dir=data_dir, track=track, log=log, status=bar if tty else None)
    except Interrupted as exc:
        raise Interrupted(f"interrupted ({signal.Signals(exc.signum).name}); finished trials and saved epochs are "
                          f"kept, continue with: fmlab study run {file} --out {target}", exc.signum) from None
    typer.echo(f"report: {result.report_path}")


@study_app.command("status")
def study_status(
    file: Annotated[Path, typer.Argument(help="The study's TOML file.")],
    out: Annotated[Path | None, typer.Option(help="Study directory (default runs/<study name>).")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir")] = None,
) -> None:
    """Which trials are done, partly trained or not started, and the time they took; runs nothing."""
    from fmlab import api

    typer.echo("\n".join(api.study_status(file, out, data_dir)))


@study_app.command("report")
def study_report(
    directory: Annotated[Path, typer.Argument(help="A study directory.")],
    pdf: Annotated[bool, typer.Option("--pdf", help="Also print report.pdf through headless Chromium.")] = False,
) -> None:
    """Re-render the HTML and Markdown report from a study folder (and the PDF with --pdf)."""
    from fmlab import api

    study = api.open_study(directory)
    typer.echo(f"report: {study.write_report()}")
    if pdf:
        typer.echo(f"pdf: {study.write_pdf()}")


@study_app.command("table")
def study_table(
    directory: Annotated[Path, typer.Argument(help="A finished study directory.")],
    fmt: Annotated[str, typer.Option("--format", help="latex (booktabs), markdown or csv.")] = "markdown",
    out: Annotated[Path | None, typer.Option(help="Write the table to this file instead of printing it.")] = None,
) -> None:
    """The results table: accuracy mean ± std and 95% CI, F1, AUC, ECE, size, time; significance marks."""
    from fmlab import api

    text = api.open_study(directory).table(fmt, out)
    typer.echo(text if out is None else f"table: {out}", nl=out is not None)
