"""`fmlab tune grid` and `fmlab tune optuna`: parse options, run one search, print where the results are."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from fmlab.errors import ConfigError

Opt = typer.Option
tune_app = typer.Typer(no_args_is_help=True, help="Hyperparameter search: scikit-learn grids and Optuna.")

TrainSize = Annotated[int | None, Opt(help="Search on a stratified subset of this many training images.")]
ValSize = Annotated[int, Opt(help="Validation images (the holdout split; Optuna scores trials on it).")]
Epochs = Annotated[int, Opt(help="Epochs per fit.")]
Seed = Annotated[int, Opt(help="Seed of the split, the folds and every fit.")]
Device = Annotated[str, Opt(help="auto, cpu, cuda or mps.")]
DataDir = Annotated[Path | None, Opt("--data-dir", help="Folder holding the four Fashion-MNIST .gz files.")]
Out = Annotated[Path, Opt(help="Output folder.")]


def _models(model: str | None, models: str | None) -> list[str]:
    names = [m.strip() for m in (models or "").split(",") if m.strip()]
    if model:
        names.insert(0, model)
    if not names:
        raise ConfigError("name a model with --model NAME or --models A,B")
    return list(dict.fromkeys(names))


def _params(pairs: list[str] | None) -> dict[str, list[Any]]:
    from fmlab.tune.params import parse_param

    grid: dict[str, list[Any]] = {}
    for pair in pairs or []:
        key, values = parse_param(pair)
        if key in grid:
            raise ConfigError(f"--param {key} is given twice; list all its values in one --param")
        grid[key] = values
    if not grid:
        raise ConfigError("give at least one --param name=v1,v2 (e.g. --param lr=1e-3,3e-3,1e-2)")
    return grid


@tune_app.command("grid")
def grid(
    model: Annotated[str | None, Opt(help="Model to search (lenet5, simple-cnn, cnn, mlp, logreg).")] = None,
    models: Annotated[str | None, Opt(help="Comma-separated models, all searched over the same grid.")] = None,
    param: Annotated[list[str] | None, Opt("--param", help="name=v1,v2,... (repeat per parameter).")] = None,
    cv: Annotated[int, Opt(help="Number of cross-validation folds.")] = 3,
    holdout: Annotated[bool, Opt("--holdout", help="Score on the validation split instead of CV folds.")] = False,
    halving: Annotated[bool, Opt("--halving", help="Successive halving over the epoch budget.")] = False,
    executor: Annotated[str, Opt(help="local or dask.")] = "local",
    scheduler: Annotated[str | None, Opt(help="Dask scheduler address, or local:N worker processes.")] = None,
    train_size: TrainSize = None,
    val_size: ValSize = 5000,
    epochs: Epochs = 5,
    seed: Seed = 0,
    device: Device = "cpu",
    data_dir: DataDir = None,
    out: Out = Path("runs/tune-grid"),
) -> None:
    """Grid search (GridSearchCV / HalvingGridSearchCV) on the training split; refit the best, test it once."""
    from fmlab import api

    result = api.tune_grid(
        _models(model, models), _params(param), out=out, data_dir=data_dir, cv="holdout" if holdout else cv,
        halving=halving, executor=executor, scheduler=scheduler, train_size=train_size, val_size=val_size,
        epochs=epochs, seed=seed, device=device)
    typer.echo(
        f"best: {result['best_model']} {json.dumps(result['best_params'])}, CV accuracy {result['cv_score']:.2%}, "
        f"test accuracy {result['test_acc']:.2%} (refit, evaluated once)\nresults: {out}"
    )


@tune_app.command("optuna")
def optuna(
    model: Annotated[str, Opt(help="Model to search.")] = "cnn",
    trials: Annotated[int, Opt(help="Trials to run now (added to those already in the study).")] = 20,
    storage: Annotated[str | None, Opt(help="SQLAlchemy URL; default sqlite:///OUT/optuna.db.")] = None,
    study_name: Annotated[str | None, Opt(help="Study name; default MODEL-search.")] = None,
    pruner: Annotated[str, Opt(help="median, hyperband or none.")] = "median",
    timeout: Annotated[float | None, Opt(help="Stop starting trials after this many seconds.")] = None,
    space: Annotated[Path | None, Opt(help="TOML search space; default: fmlab/tune/optuna_space.toml.")] = None,
    sampler_seed: Annotated[int | None, Opt(help="TPE seed (give concurrent workers different ones).")] = None,
    train_size: TrainSize = None,
    val_size: ValSize = 5000,
    epochs: Epochs = 5,
    seed: Seed = 0,
    device: Device = "cpu",
    data_dir: DataDir = None,
    out: Out = Path("runs/tune-optuna"),
) -> None:
    """Optuna TPE search with pruning; resumable, and shareable by workers through --storage."""
    from fmlab import api

    result = api.tune_optuna(
        model, trials, out=out, data_dir=data_dir, storage=storage, study_name=study_name, pruner=pruner,
        timeout=timeout, space=str(space) if space else None, sampler_seed=sampler_seed, train_size=train_size,
        val_size=val_size, epochs=epochs, seed=seed, device=device)
    best = result["best"]
    line = "no finished trial yet" if best is None else f"best trial {best['number']}: val accuracy {best['value']:.2%}"
    params = json.dumps(best["params"]) if best else ""
    typer.echo(f"{result['study_name']}: {result['n_trials']} trials in the study, {line} {params}\nresults: {out}")
