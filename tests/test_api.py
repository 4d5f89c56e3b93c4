"""The public API: every exported name documented and typed, the CLI a thin face over it, objects that show
themselves, and a study's [tune] searches feeding tuned variants without reading the test labels."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from pathlib import Path

import numpy as np
import pytest

import fmlab
from cli_helpers import run_cli
from fmlab import api
from fmlab.data import CLASS_NAMES
from fmlab.errors import FmlabError
from synthetic import make_data

ROOT = Path(__file__).resolve().parents[1]


def _documented_and_typed(name: str, obj: object) -> list[str]:
    problems = [] if inspect.getdoc(obj) else [f"{name}: no docstring"]
    if inspect.isfunction(obj):
        hints = typing.get_type_hints(obj)
        params = [p for p in inspect.signature(obj).parameters.values() if p.name != "self"]
        problems += [f"{name}({p.name}): no type hint" for p in params if p.name not in hints]
        problems += [] if "return" in hints else [f"{name}: no return type"]
    return problems


def test_every_public_name_is_documented_and_typed():
    problems = []
    for name in fmlab.__all__:
        obj = getattr(fmlab, name)
        problems += _documented_and_typed(name, obj)
        if inspect.isclass(obj):
            typing.get_type_hints(obj)  # the dataclass fields resolve
            for attr, member in vars(obj).items():
                if not attr.startswith("_"):
                    target = member.fget if isinstance(member, property) else member
                    problems += _documented_and_typed(f"{name}.{attr}", target)
    assert not problems, problems
    assert len(fmlab.__all__) >= 15 and all(hasattr(api, n) for n in fmlab.__all__)


CLI_CALLS = [
    (["train", "--model", "logreg", "--epochs", "1"], "train"),
    (["evaluate", "runs/a"], "evaluate"),
    (["evaluate", "runs/a", "runs/b"], "compare"),
    (["predict", "runs/a", "x.png"], "predict"),
    (["export", "runs/a", "--onnx", "a.onnx"], "export"),
    (["data", "info"], "describe_data"),
    (["data", "verify"], "load_data"),
    (["models"], "list_models"),
    (["study", "run", str(ROOT / "configs" / "quick.toml")], "run_study"),
    (["study", "status", str(ROOT / "configs" / "quick.toml")], "study_status"),
    (["study", "report", "runs/s"], "open_study"),
    (["study", "table", "runs/s"], "open_study"),
    (["tune", "grid", "--model", "logreg", "--param", "lr=1e-3,1e-2"], "tune_grid"),
    (["tune", "optuna", "--model", "logreg", "--trials", "1"], "tune_optuna"),
]


@pytest.mark.parametrize(("argv", "function"), CLI_CALLS, ids=[" ".join(a[:2]) for a, _ in CLI_CALLS])
def test_each_cli_command_is_a_call_of_the_api(argv, function, monkeypatch, capsys):
    def called(*args, **kwargs):
        raise FmlabError(f"api.{function} called")

    monkeypatch.setattr(api, function, called)
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and f"api.{function} called" in err


def test_train_returns_a_run_that_shows_itself_predicts_and_reopens(tmp_path):
    data = make_data(600, 200)
    run = fmlab.train("logreg", config={"lr": 1e-2}, data=data, out=tmp_path / "run", epochs=2, val_size=100,
                      progress=False)
    assert run.spec.lr == 1e-2 and run.spec.epochs == 2 and run.model == "logreg"  # dict, then keyword settings
    assert run.test_acc == run.metrics["test_acc"] > 0.5 and len(run.history) == 2
    line = repr(run)
    assert "\n" not in line and f"{run.test_acc:.2%}" in line and "logreg" in line
    shown = run._repr_html_()
    assert f"{run.test_acc:.2%}" in shown and "data:image/png;base64," in shown
    again = fmlab.open_run(tmp_path / "run")
    assert dataclasses.asdict(again) == dataclasses.asdict(run)
    logits = run.predictor().logits(data.x_test)
    assert float((logits.argmax(1).numpy() == data.y_test).mean()) == pytest.approx(run.test_acc)
    np.save(tmp_path / "items.npy", data.x_test[:4])
    entries = run.predict([tmp_path / "items.npy"], top_k=2)
    assert [e["prediction"] for e in entries] == [CLASS_NAMES[k] for k in logits[:4].argmax(1).tolist()]
    with pytest.raises(FmlabError, match="drop --epochs"):
        fmlab.train(out=tmp_path / "run", resume=True, epochs=3)


def test_models_and_recipes_are_the_registry():
    from fmlab import models

    listed = fmlab.list_models()
    assert set(listed) == set(models.names())
    assert listed["cnn"]["recipe"] == fmlab.recipe("cnn") == models.recipe("cnn")
    assert listed["simple-cnn"]["params"] < listed["lenet5"]["params"]


class Poisoned:
    """Test labels that fail the test the moment anything reads them."""

    def _read(self, *args, **kwargs):
        raise AssertionError("the search read the test labels")

    __array__ = __len__ = __getitem__ = __iter__ = __getattr__ = _read


def test_a_studys_searches_never_read_the_test_labels_and_name_each_models_best(tmp_path):
    from fmlab.config import GridSection, OptunaSection, TuneConfig
    from fmlab.runs import StudyDir
    from fmlab.tune import run_tune_section

    data = make_data(900, 200)
    budget = {"train_size": 300, "val_size": 100, "epochs": 1}
    space = {"params": {"lr": {"kind": "categorical", "choices": [1e-4, 1e-2]}}}
    section = TuneConfig(grid=GridSection(models=["logreg", "mlp"], params={"lr": [1e-4, 1e-2]}, cv="holdout",
                                          **budget),
                         optuna=OptunaSection(model="logreg", trials=2, space=space, **budget))
    poisoned = dataclasses.replace(data, y_test=Poisoned())
    lines = []
    summary = run_tune_section(section, StudyDir(tmp_path / "poisoned"), poisoned, lines.append)
    clean = run_tune_section(section, StudyDir(tmp_path / "clean"), data, lambda _: None)
    best = summary["grid"]["best_by_model"]
    assert best == clean["grid"]["best_by_model"] and set(best) == {"logreg", "mlp"}
    assert all(b["params"] == {"lr": 1e-2} for b in best.values())  # 1e-4 barely moves in one epoch
    assert "test_acc" not in summary["grid"] and summary["optuna"]["best"] == clean["optuna"]["best"]
    assert lines == ["tune: grid search on the study's training/validation split",
                     "tune: optuna search on the study's training/validation split"]
    again = []
    assert run_tune_section(section, StudyDir(tmp_path / "poisoned"), poisoned, again.append) == summary
    assert again == [f"tune: the {name} search finished before; its results are reused" for name in ("grid", "optuna")]


def test_searches_validate_on_the_studys_split_and_add_tuned_variants():
    from fmlab.config import StudyConfig, validate
    from fmlab.errors import ConfigError
    from fmlab.study.plan import plan, searched_split

    table = {"seeds": [0, 1], "defaults": {"val_size": 700, "split_seed": 3, "epochs": 2},
             "families": {"a": {"model": "lenet5"}, "b": {"model": "simple-cnn", "variants": {"x": {"lr": 1e-3}}}},
             "tune": {"grid": {"models": ["lenet5", "simple-cnn"], "params": {"lr": [1e-3, 1e-2], "batch_size": [64],
                                                                            "l2": [0.0, 1e-4], "epochs": [1]}}}}
    study = validate(StudyConfig, table, "study")
    grid = searched_split(study).grid
    assert (grid.val_size, grid.seed) == (700, 3)
    summary = {"grid": {"best_by_model": {"lenet5": {"params": {"lr": 1e-2, "batch_size": 64, "l2": 1e-4,
                                                                  "epochs": 1}, "cv_score": 0.8}}}}
    trials = plan(study, summary)
    tuned = [t for t in trials if t.variant == "tuned"]
    assert [(t.family, t.seed) for t in tuned] == [("a", 0), ("a", 1)]  # simple-cnn's search is not finished
    spec = tuned[0].spec
    assert (spec.lr, spec.batch_size, spec.l2, spec.epochs) == (1e-2, 64, 1e-4, 2)  # the study's budget
    assert len(trials) == len(plan(study)) + 2
    with pytest.raises(ConfigError, match="val_size = 500 differs from the study's split"):
        plan(validate(StudyConfig, {**table, "tune": {"grid": {**table["tune"]["grid"], "val_size": 500}}}, "s"))
    with pytest.raises(ConfigError, match="the variant name 'tuned' is the searched one's"):
        b = {"model": "simple-cnn", "variants": {"tuned": {"lr": 1e-3}}}
        plan(validate(StudyConfig, {**table, "families": {**table["families"], "b": b}}, "s"))
