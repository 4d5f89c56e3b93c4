"""The `fmlab` command line: each command parses, calls one library function, prints."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from typer.exceptions import Abort, Exit, TyperException

from fmlab.errors import FmlabError, Interrupted, Signalled
from fmlab.evaluation.commands import evaluate
from fmlab.infer.commands import export, predict
from fmlab.study.commands import study_app
from fmlab.training.commands import train
from fmlab.tune.commands import tune_app

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Reproducible comparative studies of image classifiers on Fashion-MNIST.",
)


def _version(value: bool) -> None:
    if value:
        from fmlab.version import __version__

        typer.echo(f"fmlab {__version__}")
        raise Exit()


@app.callback()
def _options(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                   help="Print the version and exit.")] = False) -> None:
    """Reproducible comparative studies of image classifiers on Fashion-MNIST."""


data_app = typer.Typer(no_args_is_help=True, help="Find, verify and describe the data set.")
app.add_typer(data_app, name="data")

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Folder holding the four Fashion-MNIST .gz files.")
]


@data_app.command("info")
def data_info(data_dir: DataDir = None, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Where the data was found, checksums, counts per split and class, pixel statistics."""
    from fmlab import api
    from fmlab.data.summary import render

    info = api.describe_data(data_dir)
    typer.echo(json.dumps(info, indent=2) if as_json else render(info))


@data_app.command("verify")
def data_verify(data_dir: DataDir = None) -> None:
    """Check the four files against the recorded checksums; exit 0 when all match, else 2."""
    from fmlab import api

    data = api.load_data(data_dir)
    typer.echo(f"ok: {data.source.path} ({data.source.origin}), 4 files verified")


@app.command("models")
def list_models(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every registered model: family, arguments (the network its name builds), training recipe, parameters."""
    from fmlab import api

    rows = api.list_models()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for name, row in rows.items():
        recipe = ", ".join(f"{k}={v}" for k, v in row["recipe"].items()) or "TrainConfig defaults"
        typer.echo(f"{name} ({row['family']}, {row['params']:,} parameters): {row['description']}\n  recipe: {recipe}")


app.command("train")(train)
app.command("evaluate")(evaluate)
app.command("predict")(predict)
app.command("export")(export)
app.add_typer(study_app, name="study")
app.add_typer(tune_app, name="tune")


def _stop(signum: int, _frame: object) -> None:
    raise Signalled(signum)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; every anticipated failure is one line on stderr and exit status 2. SIGTERM and SIGHUP
    stop work the way Ctrl+C does (saved state, a message, exit status 128 + the signal's number)."""
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        code = _run(argv)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    sys.exit(code)


def _run(argv: list[str] | None) -> int:
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="fmlab", standalone_mode=False)
    except TyperException as exc:
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            typer.echo(ctx.get_help())
            return 0
        typer.echo(f"error: {exc.format_message()}".replace("\n", " "), err=True)
        return 2
    except Interrupted as exc:
        typer.echo(str(exc), err=True)
        return 128 + exc.signum
    except FmlabError as exc:
        typer.echo(f"error: {exc}".replace("\n", " "), err=True)
        return 2
    except (Abort, KeyboardInterrupt) as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        typer.echo(f"interrupted ({signal.Signals(signum).name})", err=True)
        return 128 + signum
    except Exit as exc:
        code = exc.exit_code
    return code if isinstance(code, int) else 0
