"""Grid search over skorch-wrapped fmlab models with scikit-learn, locally or on a Dask cluster.

The search sees the official training set only: `train_size + val_size` of its images (all of them
when train_size is None), split the way `fmlab train` splits them. `cv="holdout"` scores every
setting on that validation split; `cv=k` uses stratified k folds over the same images. Every model
named gets the same grid (one candidate list per model). The best setting is refitted on all the
searched images and evaluated once on the test set; nothing else touches the test set.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fmlab.data import FashionMNIST, load, make_split
from fmlab.errors import ConfigError
from fmlab.io import atomic_write, csv_cell, write_json
from fmlab.tune.params import TRAIN_KEYS, check_grid, check_models

MAX_FOLDS = 100
TIMING = ("mean_fit_time", "std_fit_time", "mean_score_time", "std_score_time")


def estimator_key(key: str) -> str:
    """fmlab parameter name -> FmlabClassifier parameter name."""
    if key == "epochs":
        return "max_epochs"
    return key if key in TRAIN_KEYS and key != "dropout" else f"module__{key}"


def _candidates(model_names: Sequence[str], grid: Mapping[str, Sequence[Any]]) -> list[dict[str, list[Any]]]:
    """One scikit-learn grid per model: the same values for each, the model fixed."""
    return [{"model": [name], **{estimator_key(k): list(v) for k, v in grid.items()}} for name in model_names]


def _splitter(cv: int | str, n_train: int, n_val: int, seed: int) -> Any:
    from sklearn.model_selection import PredefinedSplit, StratifiedKFold

    if cv == "holdout":
        return PredefinedSplit(np.r_[np.full(n_train, -1), np.zeros(n_val, dtype=int)])
    return StratifiedKFold(cv, shuffle=True, random_state=seed)


def check_options(
    models: Sequence[str], grid: Mapping[str, Sequence[Any]], *, cv: int | str, halving: bool, executor: str,
    scheduler: Any,
) -> list[str]:
    """Validate a search before any data is loaded; returns the model names (duplicates dropped)."""
    names = check_models(models)
    check_grid(dict(grid), names)
    if cv != "holdout" and (isinstance(cv, bool) or not isinstance(cv, int) or not 2 <= cv <= MAX_FOLDS):
        raise ConfigError(f"cv must be 'holdout' or a number of folds from 2 to {MAX_FOLDS}, got {cv!r}")
    if halving and "epochs" in grid:
        raise ConfigError("with halving the epoch budget is the halving resource; drop 'epochs' from the grid")
    if executor not in ("local", "dask"):
        raise ConfigError(f"unknown executor '{executor}'; use local or dask")
    if scheduler is not None and executor != "dask":
        raise ConfigError("a Dask scheduler was given but the executor is local; add --executor dask")
    return names


@contextlib.contextmanager
def dask_backend(scheduler: Any) -> Iterator[None]:
    """joblib's Dask backend on `scheduler`: a Client, an address, or 'local:N' (N worker processes)."""
    from fmlab.cluster import dask_client

    with dask_client(scheduler) as client:
        import joblib

        with joblib.parallel_backend("dask", client=client):  # threads_per_worker=1: torch's RNG is per process
            yield


def _rows(results: dict[str, Any], grid_keys: Sequence[str]) -> list[dict[str, Any]]:
    """cv_results_ as flat rows with fmlab parameter names (timings last)."""
    splits = sorted(k for k in results if k.startswith("split") and k.endswith("_test_score"))
    extra = [k for k in ("iter", "n_resources") if k in results]
    rows = []
    for i in range(len(results["params"])):
        row: dict[str, Any] = {"model": results["param_model"][i]}
        row.update({k: _plain(results[f"param_{estimator_key(k)}"][i]) for k in grid_keys})
        row.update({k: _plain(results[k][i]) for k in (*extra, "mean_test_score", "std_test_score",
                                                        "rank_test_score", *splits, *TIMING)})
        rows.append(row)
    return rows


def _plain(value: Any) -> Any:
    """numpy scalars and masked entries -> plain JSON/CSV values."""
    if value is np.ma.masked:
        return None
    if isinstance(value, np.generic):
        return value.item()
    return list(value) if isinstance(value, tuple) else value


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    def write(fh: Any) -> None:
        writer = csv.DictWriter(fh, list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: csv_cell(v) for k, v in row.items()} for row in rows)

    atomic_write(path, write)


def sensitivity_figures(rows: list[dict[str, Any]], grid_keys: Sequence[str], out_dir: Path) -> list[Path]:
    """Per parameter with several values: mean CV score vs value, one line per model (other settings averaged)."""
    from fmlab.evaluation.plots import new_figure, save

    if rows and "iter" in rows[0]:  # successive halving: compare candidates at the first (common) budget
        rows = [r for r in rows if r["iter"] == 0]
    paths = []
    for key in grid_keys:
        distinct = {json.dumps(r[key]): r[key] for r in rows}
        labels = sorted(distinct, key=lambda s: (0, distinct[s]) if isinstance(distinct[s], int | float) else (1, s))
        if len(labels) < 2:
            continue
        fig = new_figure(6, 4, layout="constrained")
        ax = fig.subplots()
        for model in dict.fromkeys(r["model"] for r in rows):
            scores = [[r["mean_test_score"] for r in rows if r["model"] == model and json.dumps(r[key]) == label]
                      for label in labels]
            ax.plot(range(len(labels)), [np.mean(s) for s in scores], marker="o", label=model)
        ax.set_xticks(range(len(labels)), labels)
        ax.set(xlabel=key, ylabel="mean CV accuracy", title=f"Sensitivity to {key}")
        ax.grid(alpha=0.3)
        ax.legend()
        paths.append(save(fig, out_dir / f"sensitivity_{key}.png"))
    return paths


def grid_search(
    models: Sequence[str],
    param_grid: Mapping[str, Sequence[Any]],
    *,
    out_dir: str | Path,
    data: FashionMNIST | None = None,
    cv: int | str = 3,
    halving: bool = False,
    executor: str = "local",
    scheduler: Any = None,
    train_size: int | None = None,
    val_size: int = 5000,
    epochs: int = 5,
    seed: int = 0,
    device: str = "cpu",
    test: bool = True,
) -> dict[str, Any]:
    """Search `param_grid` for every model in `models`; write results to out_dir; return a summary with the
    best setting overall and for each model (`best_by_model`).

    The validation images are those `fmlab train` validates on with the same `val_size` and split seed (whatever
    `train_size`), so a study's search scores on the study's validation split. Writes cv_results.csv, best_params.json,
    sensitivity_<param>.png and, with `test`, refits the best setting and scores it once on the test set
    (test_metrics.json); without `test` nothing reads the test set.
    """
    from sklearn.metrics import log_loss

    from fmlab.runs.spec import MACHINE_THREADS
    from fmlab.training.loop import resolve_device
    from fmlab.tune.skorch_model import FmlabClassifier

    grid = {k: list(v) for k, v in param_grid.items()}
    names = check_options(models, grid, cv=cv, halving=halving, executor=executor, scheduler=scheduler)
    data = data if data is not None else load()
    split = make_split(data, val_size, seed, train_size)
    searched = split.train_idx
    pool = np.r_[searched, split.val_idx]
    x, y = data.x_train[pool], data.y_train[pool]
    if cv != "holdout" and cv > np.bincount(y, minlength=10).min():
        raise ConfigError(f"cv={cv} folds need at least {cv} searched images of every class; "
                          f"the search has {np.bincount(y, minlength=10).min()} of its rarest (raise train_size)")
    splitter = _splitter(cv, len(searched), len(split.val_idx), seed)
    # every cell trains with this machine's thread count, wherever it runs (thread counts change rounding)
    net = FmlabClassifier(names[0], max_epochs=epochs, seed=seed, device=str(resolve_device(device, names[0])),
                          threads=MACHINE_THREADS)
    options: dict[str, Any] = {"scoring": "accuracy", "cv": splitter, "refit": test, "error_score": "raise",
                               "n_jobs": -1 if executor == "dask" else None}
    if halving:
        from sklearn.experimental import enable_halving_search_cv  # noqa: F401
        from sklearn.model_selection import HalvingGridSearchCV

        search = HalvingGridSearchCV(net, _candidates(names, grid), resource="max_epochs", max_resources=epochs,
                                     min_resources="exhaust", factor=3, random_state=seed, **options)
    else:
        from sklearn.model_selection import GridSearchCV

        search = GridSearchCV(net, _candidates(names, grid), **options)
    with dask_backend(scheduler) if executor == "dask" else contextlib.nullcontext():
        search.fit(x, y)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = _rows(search.cv_results_, list(grid))
    _write_csv(out / "cv_results.csv", rows)
    best = rows[int(search.best_index_)]
    best_params = {k: best[k] for k in grid}
    chosen = {"model": best["model"], "params": best_params, "cv_score": float(search.best_score_),
              "cv": cv, "halving": halving, "n_candidates": len(rows),
              "epochs": int(search.best_params_.get("max_epochs", epochs)),
              "searched_images": len(pool)}
    write_json(out / "best_params.json", chosen)
    figures = sensitivity_figures(rows, list(grid), out)
    result = {
        "best_model": best["model"], "best_params": best_params, "cv_score": chosen["cv_score"], "cv": cv,
        "best_by_model": best_by_model(rows, list(grid)), "searched_images": len(pool),
        "cv_results": str(out / "cv_results.csv"), "best_params_path": str(out / "best_params.json"),
        "figures": [str(p) for p in figures],
    }
    if not test:
        return result
    probs = search.best_estimator_.predict_proba(data.x_test)  # the one look at the test set
    scored = {"model": best["model"], "params": best_params,
              "test_acc": float((probs.argmax(1) == data.y_test).mean()),
              "test_loss": float(log_loss(data.y_test, probs, labels=list(range(10)))), "n_test": len(data.y_test)}
    if not math.isfinite(scored["test_loss"]):
        scored["test_loss"] = None
    write_json(out / "test_metrics.json", scored)
    return {**result, "test_acc": scored["test_acc"], "test_metrics": str(out / "test_metrics.json")}


def best_by_model(rows: list[dict[str, Any]], grid_keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each model's best row of the search (ties: the first, as scikit-learn ranks)."""
    best: dict[str, dict[str, Any]] = {}
    for row in rows:
        if "iter" in row and row["iter"] != max(r["iter"] for r in rows if r["model"] == row["model"]):
            continue  # successive halving: only candidates that reached the last round
        if row["model"] not in best or row["mean_test_score"] > best[row["model"]]["cv_score"]:
            best[row["model"]] = {"params": {k: row[k] for k in grid_keys}, "cv_score": row["mean_test_score"]}
    return best
