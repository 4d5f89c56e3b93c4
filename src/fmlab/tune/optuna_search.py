"""Optuna search over fmlab training settings: TPE sampling, per-epoch pruning, resumable shared storage.

The search space is a TOML table (default: fmlab/tune/optuna_space.toml):

    [params]                       # for every model
    lr = { kind = "log-float", low = 1e-4, high = 3e-2 }
    batch_size = { kind = "categorical", choices = [64, 128, 256] }
    [models.cnn]                   # model arguments, only when searching that model
    hidden = { kind = "int", low = 32, high = 256, log = true }
    channels = { kind = "categorical", choices = [[16, 32, 64], [32, 64, 128]] }

Kinds: float (low, high, optional step), log-float (low > 0, high), int (low, high, optional step
and log) and categorical (choices; list choices such as channel widths are allowed). Each trial is
a run of fmlab's training engine on the resolved spec of its settings, scored by its best validation
accuracy (the test set is never used); the per-epoch validation accuracy feeds the pruner. Trials
live in an RDB storage (SQLite by default), so `optuna_search` can be stopped and called again to
continue, and several processes or machines given the same storage URL and study name share one study.
"""

from __future__ import annotations

import csv
import json
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from fmlab.config import Strict, read_toml, validate
from fmlab.data import FashionMNIST, load
from fmlab.errors import ConfigError, FmlabError
from fmlab.io import atomic_write, csv_cell, make_dir, write_json
from fmlab.runs import resolve
from fmlab.tune.params import check_models, check_param, check_value, split_params

DEFAULT_SPACE = Path(__file__).with_name("optuna_space.toml")


class ParamSpec(Strict):
    kind: Literal["float", "log-float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    step: float | None = Field(None, gt=0)
    log: bool = False
    choices: list[Any] | None = None


def _check_spec(name: str, spec: ParamSpec, model: str, source: str) -> None:
    where = f"{source}: '{name}'"
    if spec.kind == "categorical":
        if not spec.choices or spec.low is not None or spec.high is not None:
            raise ConfigError(f"{where}: a categorical parameter needs a non-empty 'choices' list (and no low/high)")
        for choice in spec.choices:
            check_value(name, choice, [model], f"{where} choice {choice!r}")
        return
    if spec.low is None or spec.high is None or spec.choices is not None:
        raise ConfigError(f"{where}: kind '{spec.kind}' needs 'low' and 'high' (and no choices)")
    if spec.low > spec.high:
        raise ConfigError(f"{where}: low {spec.low} is above high {spec.high}")
    if (spec.kind == "log-float" or spec.log) and spec.low <= 0:
        raise ConfigError(f"{where}: a log scale needs low > 0, got {spec.low}")
    if spec.kind == "int" and not (float(spec.low).is_integer() and float(spec.high).is_integer()):
        raise ConfigError(f"{where}: an int parameter needs whole-number bounds, got {spec.low}..{spec.high}")
    if spec.kind != "int" and spec.log:
        raise ConfigError(f"{where}: use kind 'log-float' for a log-uniform float")
    for bound in (spec.low, spec.high):
        check_value(name, int(bound) if spec.kind == "int" else bound, [model], f"{where} bound {bound!r}")


def parse_space(space: Mapping[str, Any], source: str, model: str) -> dict[str, ParamSpec]:
    """The validated specs for `model`: [params] plus [models.<model>]; ConfigError on any problem."""
    check_models([model])
    unknown = sorted(set(space) - {"params", "models"})
    if unknown:
        raise ConfigError(f"{source}: unknown table '{unknown[0]}'; a space has [params] and [models.NAME]")
    tables = [space.get("params", {}), space.get("models", {}).get(model, {})]
    specs: dict[str, ParamSpec] = {}
    for table in tables:
        if not isinstance(table, Mapping):
            raise ConfigError(f"{source}: expected a table of parameters, got {table!r}")
        for name, raw in table.items():
            check_param(name, [model], source)
            if not isinstance(raw, Mapping):
                raise ConfigError(f"{source}: '{name}' must be a table such as {{kind = \"float\", low = 0, high = 1}}")
            specs[name] = validate(ParamSpec, dict(raw), f"{source}: '{name}'")
            _check_spec(name, specs[name], model, source)
    if not specs:
        raise ConfigError(f"{source}: the search space for '{model}' is empty")
    return specs


def load_space(space: str | Path | Mapping[str, Any] | None) -> tuple[dict[str, Any], str]:
    """A space table and where it came from: a mapping, a TOML file, or the shipped default."""
    if isinstance(space, Mapping):
        return dict(space), "space"
    path = Path(space) if space is not None else DEFAULT_SPACE
    if space is None and not path.is_file():
        raise ConfigError(f"no search space given and the default {path} is missing; pass --space FILE")
    return read_toml(path), str(path)


def sample(trial: Any, specs: Mapping[str, ParamSpec]) -> dict[str, Any]:
    """One value per parameter from `trial` (list-valued choices travel through Optuna as JSON strings)."""
    params: dict[str, Any] = {}
    for name, s in specs.items():
        if s.kind == "categorical":
            coded = {json.dumps(c) if isinstance(c, list) else c: c for c in s.choices or []}
            params[name] = coded[trial.suggest_categorical(name, list(coded))]
        elif s.kind == "int":
            params[name] = trial.suggest_int(name, int(s.low), int(s.high), step=int(s.step or 1), log=s.log)
        else:
            params[name] = trial.suggest_float(name, s.low, s.high, step=s.step, log=s.kind == "log-float")
    return params


def open_study(storage: str, study_name: str, pruner: str, epochs: int) -> Any:
    """Create or load the study; retried briefly, since workers starting together race to create tables."""
    import optuna
    import sqlalchemy.exc

    pruners = {"median": lambda: optuna.pruners.MedianPruner(n_startup_trials=5),
               "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs),
               "none": optuna.pruners.NopPruner}
    if pruner not in pruners:
        raise ConfigError(f"unknown pruner '{pruner}'; use median, hyperband or none")
    engine: dict[str, Any] = {}
    if storage.startswith("sqlite:///"):
        folder = Path(storage.removeprefix("sqlite:///")).parent
        if not folder.is_dir():
            raise ConfigError(f"storage '{storage}': folder {folder} does not exist; create it, or give another path")
        engine = {"connect_args": {"timeout": 60}}
    for attempt in range(5):
        try:
            rdb = optuna.storages.RDBStorage(storage, engine_kwargs=engine)
            return optuna.create_study(storage=rdb, study_name=study_name, pruner=pruners[pruner](),
                                       direction="maximize", load_if_exists=True)
        except sqlalchemy.exc.ArgumentError:
            raise ConfigError(f"storage '{storage}' is not a database URL such as sqlite:///runs/optuna.db") from None
        except ImportError as exc:
            raise FmlabError(f"storage '{storage}' needs a database driver that is not installed ({exc})") from None
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError, optuna.exceptions.DuplicatedStudyError):
            time.sleep(0.5 * (attempt + 1))  # workers starting together race to create the tables
        except sqlalchemy.exc.DatabaseError as exc:
            raise ConfigError(f"storage '{storage}' is not a usable database ({str(exc.orig)[:120]})") from None
    raise FmlabError(f"storage '{storage}' cannot be opened (locked, read-only or unreachable); check it and retry")


def optuna_search(
    model: str,
    trials: int,
    *,
    out_dir: str | Path,
    data: FashionMNIST | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    pruner: str = "median",
    timeout: float | None = None,
    space: str | Path | Mapping[str, Any] | None = None,
    train_size: int | None = None,
    val_size: int = 5000,
    epochs: int = 5,
    seed: int = 0,
    sampler_seed: int | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Run `trials` more trials (until `timeout` seconds) of the study; write its results to out_dir.

    storage defaults to sqlite:///<out_dir>/optuna.db and study_name to '<model>-search'. Every trial
    trains with `seed`; the TPE sampler is seeded with sampler_seed (default: seed) plus the number of
    trials already in the study, so a continued search draws new points (give concurrent workers
    different sampler seeds). Writes best_trial.json, importances.json, trials.csv and two figures.
    """
    import optuna

    from fmlab.training.fit import split_arrays
    from fmlab.training.loop import resolve_device, train

    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ConfigError(f"trials must be a positive whole number, got {trials!r}")
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"timeout must be a positive number of seconds, got {timeout}")
    table, source = load_space(space)
    specs = parse_space(table, source, model)
    base = {"model": model, "epochs": epochs, "train_size": train_size, "val_size": val_size, "seed": seed,
            "split_seed": seed}
    base = {k: v for k, v in base.items() if v is not None}
    dev = resolve_device(device, model)
    out = Path(out_dir)
    if storage is None:
        storage = f"sqlite:///{make_dir(out) / 'optuna.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(storage, study_name or f"{model}-search", pruner, epochs)
    first = seed if sampler_seed is None else sampler_seed
    study.sampler = optuna.samplers.TPESampler(seed=first + len(study.trials))
    data = data if data is not None else load()
    train_set, val_set, norm = split_arrays(data, resolve([("optuna search", base)]), dev)

    def objective(trial: optuna.Trial) -> float:
        settings, model_args = split_params(sample(trial, specs))
        spec = resolve([("optuna search", base), (f"trial {trial.number}", {**settings, "model_args": model_args})])

        def prune(epoch: int, record: dict[str, float]) -> None:
            trial.report(record["val_acc"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")

        fitted = train(spec, train_set, val_set, norm, dev, callbacks=[prune], progress=False)
        trial.set_user_attr("status", fitted.status)
        trial.set_user_attr("best_epoch", fitted.best_epoch)
        trial.set_user_attr("config", {**settings, "model_args": model_args})
        return max(fitted.best_val_acc or 0.0, 0.0)

    study.optimize(objective, n_trials=trials, timeout=timeout, gc_after_trial=False)
    return write_outputs(study, out, storage)


def write_outputs(study: Any, out: Path, storage: str) -> dict[str, Any]:
    """best_trial.json, importances.json, trials.csv, optimisation-history and parallel-coordinate figures."""
    import optuna

    out.mkdir(parents=True, exist_ok=True)
    done = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
    counts = {state.name.lower(): len(study.get_trials(deepcopy=False, states=[state]))
              for state in optuna.trial.TrialState}
    best = study.best_trial if done else None
    summary = {
        "study_name": study.study_name, "storage": storage, "n_trials": len(study.trials), "states": counts,
        "best": None if best is None else {"number": best.number, "value": best.value, "params": best.params,
                                           "user_attrs": best.user_attrs},
    }
    write_json(out / "best_trial.json", summary)
    try:
        importances = {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (ValueError, RuntimeError):  # fewer than two finished trials, or nothing varied
        importances = {}
    write_json(out / "importances.json", importances)
    _write_trials(out / "trials.csv", study.trials)
    figures = _figures(study, out) if len(done) >= 2 else []
    return {**summary, "importances": importances, "best_trial": str(out / "best_trial.json"),
            "trials_csv": str(out / "trials.csv"), "figures": [str(p) for p in figures]}


def _write_trials(path: Path, trials: list[Any]) -> None:
    names = list(dict.fromkeys(k for t in trials for k in t.params))

    def write(fh: Any) -> None:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["number", "state", "value", "duration_s", *names])
        for t in trials:
            duration = t.duration.total_seconds() if t.duration is not None else None
            writer.writerow([t.number, t.state.name, t.value, duration, *(csv_cell(t.params.get(k)) for k in names)])

    atomic_write(path, write)


def _figures(study: Any, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm

    from fmlab.evaluation.plots import save

    paths = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna marks its matplotlib plots experimental
        for name, plot in (("optimization_history", ovm.plot_optimization_history),
                           ("parallel_coordinate", ovm.plot_parallel_coordinate)):
            fig = plot(study).figure
            fig.set_size_inches(12, 6)
            fig.tight_layout()
            paths.append(save(fig, out / f"{name}.png"))
            plt.close(fig)
    return paths
