"""Hyperparameter search: skorch wrapper, grid search (local, Dask, halving), Optuna storage, bad inputs."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.utils.estimator_checks import check_get_params_invariance, check_parameters_default_constructible

from cli_helpers import run_cli
from fmlab.errors import ConfigError
from fmlab.tune import run_tune_section
from fmlab.tune.grid import grid_search
from fmlab.tune.optuna_search import optuna_search
from fmlab.tune.params import parse_param
from fmlab.tune.skorch_model import FmlabClassifier
from synthetic import make_data

TESTS = Path(__file__).parent
# lr 1e-5 barely moves logistic regression in one epoch; 3e-3 separates the synthetic bands.
GRID = {"lr": [1e-5, 3e-3], "batch_size": [32]}
BUDGET = {"train_size": 300, "val_size": 100, "epochs": 1}
SPACE = {"params": {"lr": {"kind": "log-float", "low": 1e-4, "high": 1e-2},
                    "batch_size": {"kind": "categorical", "choices": [32, 64]}}}


@pytest.fixture(scope="module")
def data():
    return make_data(600, 200)


@pytest.fixture(scope="module")
def local_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("grid-local")
    return out, grid_search(["logreg", "mlp"], GRID, out_dir=out, data=data, cv=2, **BUDGET)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


# --- the skorch wrapper ----------------------------------------------------------------------------


def test_wrapper_is_a_well_behaved_sklearn_estimator():
    net = FmlabClassifier("simple-cnn", lr=3e-3, l2=1e-4, module__dropout=0.1, module__channels=(2, 4))
    check_get_params_invariance("FmlabClassifier", net)
    check_parameters_default_constructible("FmlabClassifier", net)
    copy = clone(net)
    assert copy is not net and copy.get_params(deep=False).keys() == net.get_params(deep=False).keys()
    for key in ("model", "lr", "l2", "module__dropout", "module__channels", "optimizer", "max_epochs"):
        assert copy.get_params()[key] == net.get_params()[key]
    new = {"lr": 0.05, "optimizer": "sgd", "weight_decay": 1e-3, "l1": 1e-5, "module__dropout": 0.3, "batch_size": 7}
    copy.set_params(**new)
    assert {k: copy.get_params()[k] for k in new} == new
    assert net.get_params()["lr"] == 3e-3  # the original is untouched


def test_wrapper_trains_through_fmlabs_engine_with_the_recipe(data):
    from fmlab.data.split import pixel_stats
    from fmlab.runs import resolve
    from fmlab.training.loop import train

    net = FmlabClassifier("logreg", max_epochs=2, batch_size=32, l2=1e-3)
    spec = net.train_config()
    assert spec == resolve([("t", {"model": "logreg", "epochs": 2, "batch_size": 32, "l2": 1e-3})])
    assert spec.schedule == "onecycle"  # the model's recipe fills what the estimator leaves unset
    x, y = data.x_train[:300], data.y_train[:300]
    net.fit(x, y)
    probs = net.predict_proba(data.x_test)
    assert probs.shape == (len(data.y_test), 10) and np.allclose(probs.sum(1), 1, atol=1e-9)
    assert net.score(data.x_test, data.y_test) > 0.9
    direct = train(spec, (torch.as_tensor(x).unsqueeze(1), torch.as_tensor(y)), None, pixel_stats(x),
                   torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(direct.predictor.state_dict().values(),
                                                  net.predictor_.state_dict().values(), strict=True))
    again = clone(net).fit(x, y)  # same seed, same numbers
    assert np.array_equal(again.predict_proba(data.x_test), probs)


def test_wrapper_takes_every_training_setting():
    import inspect

    from fmlab.tune.skorch_model import SETTINGS

    # sklearn reads an estimator's parameters from its __init__: each training setting must be one of them
    assert set(SETTINGS) <= set(inspect.signature(FmlabClassifier.__init__).parameters)
    assert {"warmup", "alternate_flip", "lr", "precision"} <= set(SETTINGS)
    assert FmlabClassifier("cnn", warmup=0.4).train_config().warmup == 0.4


def test_wrapper_takes_the_numpy_model_and_refuses_unfitted_use(data):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        FmlabClassifier("logreg").predict(data.x_test)
    net = FmlabClassifier("mlp-numpy", max_epochs=1).fit(data.x_train[:200], data.y_train[:200])
    assert net.predict_proba(data.x_test[:5]).shape == (5, 10)
    with pytest.raises(ConfigError, match="no argument 'channels'"):
        FmlabClassifier("mlp", module__channels=[4]).fit(data.x_train[:50], data.y_train[:50])


def test_a_grid_cell_scores_what_fmlab_train_gets_on_that_split(data, tmp_path):
    """Recipe, schedule, augmentation, flip TTA and channels-last all in play: the holdout score of each cell
    equals the last-epoch validation accuracy of `fit` with those settings, split and seed."""
    from fmlab.runs import resolve
    from fmlab.training.fit import fit

    small = {"channels": [[4, 8, 8]], "hidden": [16]}
    grid_search(["cnn"], {"lr": [3e-3, 1e-2], "batch_size": [32], **small}, out_dir=tmp_path, data=data,
                cv="holdout", seed=3, **BUDGET | {"epochs": 3})
    rows = read_csv(tmp_path / "cv_results.csv")
    scores = []
    for row in rows:
        spec = resolve([("t", {"model": "cnn", "lr": float(row["lr"]), "batch_size": 32, "epochs": 3, "seed": 3,
                               "split_seed": 3, "train_size": 300, "val_size": 100,
                               "model_args": {"channels": [4, 8, 8], "hidden": 16}})])
        assert spec.tta_flip and spec.augment and spec.schedule == "onecycle" and spec.weight_decay == 0.05
        result = fit(spec, data=data, device="cpu", progress=False)
        scores.append(float(row["mean_test_score"]))
        assert scores[-1] == result.history[-1]["val_acc"]
    assert len(set(scores)) == 2 and max(scores) > 0.5  # the cells learned, and differently


# --- grid search -------------------------------------------------------------------------------------


def test_grid_search_picks_the_known_best_setting(local_run):
    out, result = local_run
    assert result["best_params"] == {"lr": 3e-3, "batch_size": 32}
    rows = read_csv(out / "cv_results.csv")
    assert sorted((r["model"], float(r["lr"])) for r in rows) == [  # the same grid for every model
        ("logreg", 1e-5), ("logreg", 3e-3), ("mlp", 1e-5), ("mlp", 3e-3)]
    assert all({"split0_test_score", "split1_test_score", "rank_test_score"} <= r.keys() for r in rows)
    best = json.loads((out / "best_params.json").read_text())
    assert best["model"] == result["best_model"] and best["cv"] == 2
    test = json.loads((out / "test_metrics.json").read_text())
    assert test["n_test"] == 200 and 0 <= test["test_acc"] <= 1
    assert [Path(p).name for p in result["figures"]] == ["sensitivity_lr.png"]  # batch_size had one value
    assert (out / "sensitivity_lr.png").stat().st_size > 1000


def test_poisoned_test_labels_do_not_change_the_choice(data, tmp_path):
    poisoned = make_data(600, 200)
    poisoned.y_test[:] = np.random.default_rng(1).permutation(poisoned.y_test)
    grid = {"lr": [1e-5, 1e-3, 3e-3]}
    clean = grid_search(["logreg"], grid, out_dir=tmp_path / "a", data=data, cv="holdout", **BUDGET)
    dirty = grid_search(["logreg"], grid, out_dir=tmp_path / "b", data=poisoned, cv="holdout", **BUDGET)
    assert dirty["best_params"] == clean["best_params"] and dirty["cv_score"] == clean["cv_score"]
    scores = [[r["mean_test_score"] for r in read_csv(tmp_path / d / "cv_results.csv")] for d in "ab"]
    assert scores[0] == scores[1]
    assert dirty["test_acc"] < clean["test_acc"]  # the test set was looked at once, after the choice


def test_dask_local_cluster_gives_the_same_results(data, local_run, tmp_path):
    from dask.distributed import Client, LocalCluster

    out, local = local_run
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        remote = grid_search(["logreg", "mlp"], GRID, out_dir=tmp_path, data=data, cv=2, executor="dask",
                             scheduler=client, **BUDGET)
    assert remote["best_params"] == local["best_params"] and remote["best_model"] == local["best_model"]
    keep = ("model", "lr", "batch_size", "mean_test_score", "split0_test_score", "split1_test_score")
    rows = [[{k: r[k] for k in keep} for r in read_csv(d / "cv_results.csv")] for d in (out, tmp_path)]
    assert rows[0] == rows[1]


def test_halving_search_runs_on_the_epoch_budget(data, tmp_path):
    result = grid_search(["logreg"], {"lr": [1e-5, 1e-4, 3e-3]}, out_dir=tmp_path, data=data, cv="holdout",
                         halving=True, train_size=300, val_size=100, epochs=3)
    rows = read_csv(tmp_path / "cv_results.csv")
    assert {r["iter"] for r in rows} == {"0", "1"} and {r["n_resources"] for r in rows} == {"1", "3"}
    assert result["best_params"] == {"lr": 3e-3}


# --- Optuna ------------------------------------------------------------------------------------------


def test_optuna_resumes_from_sqlite(data, tmp_path):
    storage = f"sqlite:///{tmp_path / 'db' / 'optuna.db'}"
    with pytest.raises(ConfigError, match="does not exist; create it"):  # a storage folder is never made silently
        optuna_search("logreg", 1, out_dir=tmp_path / "out", data=data, storage=storage, space=SPACE, **BUDGET)
    (tmp_path / "db").mkdir()
    options = {"out_dir": tmp_path / "out", "data": data, "storage": storage, "study_name": "s", "space": SPACE,
               "pruner": "none", **BUDGET}
    first = optuna_search("logreg", 3, **options)
    assert first["n_trials"] == 3
    second = optuna_search("logreg", 3, **options)
    assert second["n_trials"] == 6 and second["states"]["complete"] == 6
    rows = read_csv(tmp_path / "out" / "trials.csv")
    assert [int(r["number"]) for r in rows] == list(range(6))
    assert len({(r["lr"], r["batch_size"]) for r in rows}) == 6  # the continued search drew new points
    best = json.loads((tmp_path / "out" / "best_trial.json").read_text())["best"]
    assert set(best["params"]) == {"lr", "batch_size"} and 0 <= best["value"] <= 1
    assert set(second["importances"]) <= {"lr", "batch_size"}
    assert {Path(p).name for p in second["figures"]} == {"optimization_history.png", "parallel_coordinate.png"}


WORKER = """
import sys
from synthetic import make_data
from fmlab.tune.optuna_search import optuna_search
optuna_search("logreg", 3, out_dir=sys.argv[1], data=make_data(600, 200), storage=sys.argv[2], study_name="shared",
              space={space!r}, pruner="median", sampler_seed=int(sys.argv[3]), train_size=300, val_size=100, epochs=1)
"""


def test_two_workers_share_one_study(tmp_path):
    import optuna

    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    code = WORKER.format(space=SPACE)
    workers = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / f"w{i}"), storage, str(i)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (1, 2)]
    for worker in workers:
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
    trials = optuna.load_study(study_name="shared", storage=storage).trials
    assert len(trials) == 6  # none lost
    assert sorted(t.number for t in trials) == list(range(6))  # none duplicated
    assert all(t.state.is_finished() for t in trials)


# --- a study's [tune] section --------------------------------------------------------------------------


def test_tune_section_runs_both_searches_and_summarises(data, tmp_path):
    from fmlab.config import TuneConfig, validate
    from fmlab.runs import StudyDir

    section = validate(TuneConfig, {
        "grid": {"models": ["logreg"], "params": {"lr": [1e-5, 3e-3]}, "cv": "holdout", **BUDGET},
        "optuna": {"model": "logreg", "trials": 2, "space": SPACE, **BUDGET}})
    layout = StudyDir(tmp_path)
    summary = run_tune_section(section, layout, data)
    assert layout.read_tune_summary() == summary
    assert summary["grid"]["best_params"] == {"lr": 3e-3}
    assert summary["grid"]["cv_results"] == "grid/cv_results.csv"
    assert summary["optuna"]["n_trials"] == 2 and (layout.tune / "optuna" / "optuna.db").is_file()
    assert run_tune_section(section, layout, data) == summary  # a resumed study does not search again


# --- bad input ---------------------------------------------------------------------------------------------


def test_parse_param_values():
    assert parse_param("lr=1e-3,3e-3") == ("lr", [1e-3, 3e-3])
    assert parse_param("optimizer=adam,sgd") == ("optimizer", ["adam", "sgd"])
    assert parse_param("channels=[8,16,32],[4, 8, 16]") == ("channels", [[8, 16, 32], [4, 8, 16]])
    assert parse_param("nesterov=true,false") == ("nesterov", [True, False])


GRID_ERRORS = [
    (["--param", "foo=1,2"], "unknown parameter 'foo'"),
    (["--param", "lr="], "empty value"),
    (["--param", "lr=1e-3,,1e-2"], "empty value"),
    (["--param", "lr"], "expects name=v1,v2"),
    (["--param", "lr=-0.1,1e-3"], "greater than 0"),
    (["--param", "batch_size=0"], "batch_size"),
    (["--param", "optimizer=rmsprop"], "optimizer"),
    (["--param", "lr=1e-3", "--param", "lr=1e-2"], "given twice"),
    (["--param", "channels=[4,8],[8,16]"], "unknown parameter 'channels' for lenet5"),
    ([], "at least one --param"),
    (["--param", "lr=1e-3", "--halving", "--param", "epochs=1,2"], "halving"),
    (["--param", "lr=1e-3", "--cv", "1"], "cv"),
    (["--param", "lr=1e-3", "--scheduler", "tcp://h:8786"], "--executor dask"),
]


@pytest.mark.parametrize(("args", "needle"), GRID_ERRORS)
def test_bad_grids_are_one_line_errors(capsys, args, needle):
    code, _, err = run_cli(capsys, "tune", "grid", "--models", "lenet5,simple-cnn", *args, "--epochs", "1")
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and needle in err, err


SPACE_ERRORS = [
    ('lr = { kind = "log-float", low = -1.0, high = 1e-2 }', "log scale needs low > 0"),
    ('lr = { kind = "float", low = -1.0, high = 1e-2 }', "greater than 0"),
    ('lr = { kind = "float", low = 0.1, high = 0.01 }', "above high"),
    ('lr = { kind = "uniform", low = 0.1, high = 1.0 }', "kind"),
    ('batch_size = { kind = "categorical", choices = [] }', "non-empty 'choices'"),
    ('width = { kind = "int", low = 1, high = 4 }', "unknown parameter 'width'"),
    ('lr = { kind = "float", low = 0.1 }', "needs 'low' and 'high'"),
    ('lr = 0.1', "must be a table"),
]


@pytest.mark.parametrize(("line", "needle"), SPACE_ERRORS)
def test_bad_spaces_are_one_line_errors(capsys, tmp_path, line, needle):
    space = tmp_path / "space.toml"
    space.write_text(f"[params]\n{line}\n")
    code, _, err = run_cli(capsys, "tune", "optuna", "--model", "mlp", "--space", str(space), "--trials", "1")
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and needle in err, err


def test_bad_optuna_options_are_one_line_errors(capsys, tmp_path):
    for args, needle in ((["--model", "resnet"], "unknown model 'resnet'"), (["--pruner", "asha"], "pruner"),
                         (["--trials", "0"], "trials"), (["--space", str(tmp_path / "none.toml")], "no such file")):
        code, _, err = run_cli(capsys, "tune", "optuna", *args)
        assert code == 2 and err.count("\n") == 1 and needle in err, err


# --- real data ---------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_grid_search_on_real_data(real_data, tmp_path):
    result = grid_search(["logreg"], {"lr": [1e-5, 3e-3]}, out_dir=tmp_path, data=real_data, cv="holdout",
                         train_size=2000, val_size=1000, epochs=1)
    assert result["best_params"] == {"lr": 3e-3} and result["test_acc"] > 0.7
