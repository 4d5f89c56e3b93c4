"""Hyperparameter search: scikit-learn grid search over skorch-wrapped models, and Optuna.

skorch, optuna and dask are imported only when a search runs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fmlab.config import GridSection, OptunaSection, TuneConfig
from fmlab.data import FashionMNIST
from fmlab.runs import StudyDir

__all__ = ["GridSection", "OptunaSection", "check_grid", "check_optuna", "run_grid", "run_optuna",
           "run_tune_section"]


def check_grid(section: GridSection) -> None:
    """The grid search of `section` checked the way it will run (models, grid values, options), before any data
    is loaded."""
    from fmlab.tune.grid import check_options

    check_options(section.models, section.params, cv=section.cv, halving=section.halving,
                  executor=section.executor, scheduler=section.scheduler)


def check_optuna(section: OptunaSection) -> None:
    """The Optuna search space of `section` checked for its model, before any data is loaded."""
    from fmlab.tune.optuna_search import load_space, parse_space

    parse_space(*load_space(section.space), section.model)


def run_grid(section: GridSection, out_dir: Path, data: FashionMNIST | None, test: bool = True) -> dict[str, Any]:
    """The grid search of `section`; with `test`, its winner refitted and scored once on the test set."""
    from fmlab.tune.grid import grid_search

    options = section.model_dump(exclude={"models", "params"})
    return grid_search(section.models, section.params, out_dir=out_dir, data=data, test=test, **options)


def run_optuna(section: OptunaSection, out_dir: Path, data: FashionMNIST | None) -> dict[str, Any]:
    """The Optuna search of `section` (validation accuracy only; it never reads the test set)."""
    from fmlab.tune.optuna_search import optuna_search

    options = section.model_dump(exclude={"model", "trials"})
    return optuna_search(section.model, section.trials, out_dir=out_dir, data=data, **options)


def _relative(value: Any, root: Path) -> Any:
    """Paths under `root` in a summary, made relative to it (so the summary moves with its folder)."""
    if isinstance(value, dict):
        return {k: _relative(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative(v, root) for v in value]
    if isinstance(value, str) and value.startswith(str(root)):
        return Path(value).relative_to(root).as_posix()
    return value


def run_tune_section(section: TuneConfig, layout: StudyDir, data: FashionMNIST | None,
                     log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run a study's `[tune]` table (checked by fmlab.study.plan with the study file, its validation split set to
    the study's) before the study's trials; write its summary into the study folder and return it. No search
    reads the test set: the grid's winners are not refitted here, the study trains them as `tuned` variants.

        [tune.grid]
        models = ["lenet5", "simple-cnn"]        # the same grid for every model named
        params = { lr = [1e-3, 3e-3], batch_size = [64, 128], weight_decay = [0, 1e-4] }
        cv = 3                                   # folds, or "holdout" (the train/validation split)
        halving = false                          # successive halving over the epoch budget
        executor = "local"                       # or "dask" with scheduler = "tcp://host:8786" | "local:4"
        train_size = 10000                       # images searched: train_size + val_size of the training set
        val_size = 5000
        epochs = 5
        seed = 0
        device = "cpu"

        [tune.optuna]
        model = "cnn"
        trials = 30
        space = "my_space.toml"   # default fmlab/tune/optuna_space.toml; or inline {params, models}
        pruner = "median"                        # median | hyperband | none
        storage = "sqlite:///runs/optuna.db"     # default: sqlite in the study's tune/optuna folder
        study_name = "cnn-search"                # default: "<model>-search"
        timeout = 3600                           # seconds; and train_size, val_size, epochs, seed, device

    Grid results go to the study's tune/grid folder, Optuna results to tune/optuna. The summary holds, per
    search, its settings, the best setting and score (the grid's also per model), and the CSV/JSON/figure paths
    relative to the tune folder. A search whose settings match the summary
    already there is not run again, so a resumed study does not repeat (or extend) its searches.
    """
    out = layout.tune
    runs = [(name, run, cfg) for name, run, cfg in (("grid", functools.partial(run_grid, test=False), section.grid),
                                                    ("optuna", run_optuna, section.optuna)) if cfg is not None]
    previous = layout.read_tune_summary() or {}
    summary: dict[str, Any] = {}
    for name, run, cfg in runs:
        settings = cfg.model_dump(mode="json")
        if previous.get(name, {}).get("settings") == settings:  # finished before: a resumed study skips it
            summary[name] = previous[name]
            log(f"tune: the {name} search finished before; its results are reused")
            continue
        log(f"tune: {name} search on the study's training/validation split")
        summary[name] = {"settings": settings, **_relative(run(cfg, out / name, data), out)}
        layout.write_tune_summary(summary)
    layout.write_tune_summary(summary)
    return summary
