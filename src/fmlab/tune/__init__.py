"""Hyperparameter search: scikit-learn grid search over skorch-wrapped models, and Optuna.

Heavy libraries (torch, skorch, optuna, dask) are imported only when a search runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from fmlab.config import Strict, validate
from fmlab.data import FashionMNIST
from fmlab.errors import ConfigError
from fmlab.io import write_json

__all__ = ["GridSection", "OptunaSection", "run_grid", "run_optuna", "run_tune_section"]


class SearchBudget(Strict):
    train_size: int | None = Field(None, ge=1)
    val_size: int = Field(5000, ge=1)
    epochs: int = Field(5, ge=1, le=1000)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda", "mps"] = "cpu"


class GridSection(SearchBudget):
    models: list[str] = Field(min_length=1)
    params: dict[str, list[Any]] = Field(min_length=1)
    cv: int | Literal["holdout"] = 3
    halving: bool = False
    executor: Literal["local", "dask"] = "local"
    scheduler: str | None = None


class OptunaSection(SearchBudget):
    model: str
    trials: int = Field(20, ge=1)
    storage: str | None = None
    study_name: str | None = None
    pruner: Literal["median", "hyperband", "none"] = "median"
    timeout: float | None = Field(None, gt=0)
    space: str | dict[str, Any] | None = None
    sampler_seed: int | None = None


def run_grid(section: GridSection, out_dir: Path, data: FashionMNIST | None) -> dict[str, Any]:
    from fmlab.tune.grid import grid_search

    options = section.model_dump(exclude={"models", "params"})
    return grid_search(section.models, section.params, out_dir=out_dir, data=data, **options)


def run_optuna(section: OptunaSection, out_dir: Path, data: FashionMNIST | None) -> dict[str, Any]:
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


def run_tune_section(section: dict[str, Any], out_dir: Path, data: FashionMNIST | None) -> dict[str, Any]:
    """Run a study's `[tune]` table; write `<out_dir>/summary.json` and return the same summary.

    The table holds `grid` and/or `optuna` (any other key is an error):

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
        storage = "sqlite:///runs/optuna.db"     # default: sqlite in <out_dir>/optuna
        study_name = "cnn-search"                # default: "<model>-search"
        timeout = 3600                           # seconds; and train_size, val_size, epochs, seed, device

    Grid results go to <out_dir>/grid, Optuna results to <out_dir>/optuna. The summary holds, per
    search, its settings, the best setting and score, the test accuracy of the refitted grid winner,
    and the CSV/JSON/figure paths relative to out_dir. A search whose settings match the summary
    already in out_dir is not run again, so a resumed study does not repeat (or extend) its searches.
    """
    unknown = sorted(set(section) - {"grid", "optuna"})
    if unknown:
        raise ConfigError(f"tune: unknown key '{unknown[0]}'; the [tune] table takes 'grid' and/or 'optuna'")
    if not section:
        raise ConfigError("tune: the [tune] table is empty; add a 'grid' or an 'optuna' table")
    out = Path(out_dir)
    runs = []
    if "grid" in section:
        runs.append(("grid", run_grid, validate(GridSection, section["grid"], "tune.grid")))
    if "optuna" in section:
        runs.append(("optuna", run_optuna, validate(OptunaSection, section["optuna"], "tune.optuna")))
    previous = _read_summary(out / "summary.json")
    summary: dict[str, Any] = {}
    for name, run, cfg in runs:
        settings = cfg.model_dump(mode="json")
        if previous.get(name, {}).get("settings") == settings:  # finished before: a resumed study skips it
            summary[name] = previous[name]
            continue
        summary[name] = {"settings": settings, **_relative(run(cfg, out / name, data), out)}
        write_json(out / "summary.json", summary)
    write_json(out / "summary.json", summary)
    return summary


def _read_summary(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
