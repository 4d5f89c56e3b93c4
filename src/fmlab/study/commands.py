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
    from fmlab.config import load_study
    from fmlab.errors import Interrupted
    from fmlab.study.run import run_study

    study = load_study(file)
    target = out or Path("runs") / study.name
    tty = sys.stderr.isatty()  # a bar redrawn in place on a terminal; plain lines in a log file or pipe

    def log(line: str) -> None:
        typer.echo(("\r\x1b[2K" if tty else "") + line, err=True)

    def bar(text: str) -> None:
        sys.stderr.write("\r\x1b[2K" + text[: shutil.get_terminal_size().columns - 1])
        sys.stderr.flush()

    try:
        summary = run_study(study, target, executor=executor, scheduler=scheduler, device=device,
                            data_dir=str(data_dir) if data_dir else None, track=track, log=log,
                            status=bar if tty else None)
    except Interrupted as exc:
        raise Interrupted(f"interrupted ({signal.Signals(exc.signum).name}); finished trials and saved epochs are "
                          f"kept, continue with: fmlab study run {file} --out {target}", exc.signum) from None
    typer.echo(f"report: {summary['report']}")


@study_app.command("status")
def study_status(
    file: Annotated[Path, typer.Argument(help="The study's TOML file.")],
    out: Annotated[Path | None, typer.Option(help="Study directory (default runs/<study name>).")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir")] = None,
) -> None:
    """Which trials are done, partly trained or not started, and the time they took; runs nothing."""
    from fmlab.config import load_study
    from fmlab.data import load
    from fmlab.runs import StudyDir
    from fmlab.study.plan import plan
    from fmlab.study.progress import status_lines

    study = load_study(file)
    layout, trials = StudyDir(out or Path("runs") / study.name), plan(study)
    checksums = load(data_dir).checksums
    lines = status_lines(trials, [layout.trial(t.family, t.variant, t.seed) for t in trials],
                         [t.key(checksums) for t in trials])
    typer.echo("\n".join([f"{study.name} ({layout.path}): {lines[0]}", *lines[1:]]))


@study_app.command("report")
def study_report(
    directory: Annotated[Path, typer.Argument(help="A study directory.")],
    pdf: Annotated[bool, typer.Option("--pdf", help="Also print report.pdf through headless Chromium.")] = False,
) -> None:
    """Re-render the HTML and Markdown report from a study folder (and the PDF with --pdf)."""
    from fmlab.study.report import write_pdf, write_report

    typer.echo(f"report: {write_report(directory)}")
    if pdf:
        typer.echo(f"pdf: {write_pdf(directory)}")


@study_app.command("table")
def study_table(
    directory: Annotated[Path, typer.Argument(help="A finished study directory.")],
    fmt: Annotated[str, typer.Option("--format", help="latex (booktabs), markdown or csv.")] = "markdown",
    out: Annotated[Path | None, typer.Option(help="Write the table to this file instead of printing it.")] = None,
) -> None:
    """The results table: accuracy mean ± std and 95% CI, F1, AUC, ECE, size, time; significance marks."""
    from fmlab.errors import ConfigError
    from fmlab.io import write_text
    from fmlab.runs import StudyDir, check_output
    from fmlab.study.table import FORMATS, render

    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, not '{fmt}'")
    layout = StudyDir(directory)
    text = render(layout.read_summary(), fmt)
    if out is None:
        typer.echo(text, nl=False)
        return
    write_text(check_output(out, [layout.path]), text)
    typer.echo(f"table: {out}")
