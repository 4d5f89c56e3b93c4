import csv
import dataclasses
import importlib.util
import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_helpers import assert_one_line_error, run_cli
from fmlab import models
from fmlab.errors import ConfigError, Interrupted
from fmlab.evaluation.complexity import count_parameters
from fmlab.runs import RunDir, RunDirError, resolve
from fmlab.training.fit import fit
from synthetic import make_data, write_idx_folder

DATA = make_data(n_train=1000, n_test=200)


def cfg(**kw):
    return resolve([("test", {"model": "mlp", "epochs": 2, "batch_size": 64, "val_size": 200, "lr": 3e-3, **kw})])


def run(spec, out=None, **kw):
    return fit(spec, out, data=DATA, device="cpu", progress=False, **kw)


def weights(result) -> dict[str, torch.Tensor]:
    return result.predictor.state_dict()


def same_weights(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("model", ["mlp", "mlp-numpy", "lenet5"])
def test_same_seed_same_history_and_weights(model):
    a = run(cfg(model=model, augment=True))
    b = run(cfg(model=model, augment=True))
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in a.history]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in b.history]
    assert same_weights(weights(a), weights(b))
    c = run(cfg(model=model, seed=1))
    assert not same_weights(weights(a), weights(c))


def test_erase_changes_training_only_when_augmenting():
    plain, erased = run(cfg(augment=True)), run(cfg(augment=True, erase=0.5))
    assert not same_weights(weights(plain), weights(erased))
    assert same_weights(weights(erased), weights(run(cfg(augment=True, erase=0.5))))
    assert same_weights(weights(run(cfg(erase=0.5))), weights(run(cfg())))  # augment = false turns it off too


def test_alternate_flip_mirrors_each_image_in_every_other_epoch(monkeypatch):
    import fmlab.training.loop as loop

    augment, runs = loop.augment, []

    def record(xb, gen, *, flip, **kw):
        assert isinstance(flip, torch.Tensor) and flip.dtype == torch.bool
        for image, mirrored in zip(xb, flip.tolist(), strict=True):
            runs[-1].setdefault(image.numpy().tobytes(), []).append(mirrored)
        return augment(xb, gen, flip=flip, **kw)

    monkeypatch.setattr(loop, "augment", record)
    spec = cfg(epochs=3, augment=True, alternate_flip=True, crop=0)
    for _ in range(2):
        runs.append({})
        run(spec)
    flips = list(runs[0].values())
    assert len(flips) == 800 and all(len(f) == 3 for f in flips)  # each training image once an epoch
    assert all(a != b != c for a, b, c in flips)
    assert 350 < sum(f[0] for f in flips) < 450  # a random half in the first epoch
    assert runs[1] == runs[0]  # the halves come from the seed


def test_learns_synthetic_task():
    result = run(cfg(epochs=3))
    assert result.metrics["test_acc"] > 0.9
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


@pytest.mark.parametrize("penalty", ["l1", "l2"])
def test_penalties_change_loss_and_shrink_weights(penalty):
    plain = run(cfg())
    reg = run(cfg(**{penalty: 1e-3 if penalty == "l1" else 1e-2}))
    assert reg.history[0]["train_loss"] > plain.history[0]["train_loss"]
    norm = (lambda w: w.abs().sum()) if penalty == "l1" else (lambda w: w.pow(2).sum())
    size = lambda r: sum(norm(w) for k, w in weights(r).items() if w.dim() > 1)  # noqa: E731
    assert size(reg) < 0.8 * size(plain)


def test_weight_decay_shrinks_weights():
    plain = run(cfg(optimizer="sgd", lr=0.05))
    decayed = run(cfg(optimizer="sgd", lr=0.05, weight_decay=0.05))
    l2 = lambda r: sum(w.pow(2).sum() for w in weights(r).values())  # noqa: E731
    assert l2(decayed) < l2(plain)


def test_early_stopping_stops_before_the_budget():
    result = run(cfg(epochs=30, early_stopping=2, monitor="val_acc", lr=1e-2))
    assert result.status == "early_stopped"
    assert len(result.history) < 30
    assert len(result.history) - result.best_epoch <= 2


def test_divergence_is_detected_not_a_crash(tmp_path):
    result = run(cfg(optimizer="sgd", lr=10.0, momentum=0.99, l2=100.0, epochs=3), tmp_path)
    assert result.status == "diverged"
    folder = RunDir(tmp_path)
    assert folder.read_metrics()["status"] == "diverged"
    assert np.isfinite(folder.read_predictions().logits).all()
    assert folder.problem() is None  # a diverged run is a finished, recorded result


@pytest.mark.parametrize("schedule", ["step", "cosine", "onecycle", "plateau"])
def test_schedules_change_the_learning_rate(schedule):
    result = run(cfg(schedule=schedule, epochs=4, step_size=1, gamma=0.5))
    lrs = [h["lr"] for h in result.history]
    if schedule == "plateau":
        assert all(lr <= 3e-3 for lr in lrs)
    else:
        assert lrs[-1] < lrs[0]


SMALL_CNN = {"channels": [4, 8, 8], "hidden": 16}


@pytest.mark.parametrize(
    "model,schedule,args", [("mlp", "onecycle", {}), ("mlp-numpy", "cosine", {}), ("cnn", "plateau", SMALL_CNN)]
)
@pytest.mark.parametrize("alternate_flip", [False, True])
def test_resume_after_interrupt_matches_uninterrupted_run(tmp_path, model, schedule, args, alternate_flip):
    config = cfg(model=model, epochs=3, schedule=schedule, optimizer="adam", augment=True, train_size=600,
                 model_args=args, alternate_flip=alternate_flip)
    full = run(config, tmp_path / "full")

    def stop(epoch, record):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted, match="--resume"):
        run(config, tmp_path / "cut", callbacks=[stop])
    cut = RunDir(tmp_path / "cut")
    assert cut.has_state() and "unfinished (2 of 3 epochs saved)" in cut.problem()
    resumed = run(config, tmp_path / "cut", resume=True)
    assert same_weights(weights(full), weights(resumed))
    assert [h["val_acc"] for h in full.history] == [h["val_acc"] for h in resumed.history]
    assert not cut.has_state() and cut.problem() is None


def test_run_folder_contents_carry_one_key(tmp_path):
    spec = cfg(model="lenet5")
    result = run(spec, tmp_path)
    folder = RunDir(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {
        RunDir.CONFIG, RunDir.HISTORY, RunDir.CHECKPOINT, RunDir.PREDICTIONS, RunDir.METRICS}
    saved, key = folder.read_spec()
    assert saved == spec and key == result.key  # the spec round-trips exactly
    assert saved.model_args == {"activation": "tanh", "pool": "avg", "dropout": 0.0}
    rows = list(csv.DictReader((tmp_path / RunDir.HISTORY).open()))
    assert len(rows) == 2
    assert set(rows[0]) == {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"}
    payload = torch.load(tmp_path / RunDir.CHECKPOINT, weights_only=True)
    assert payload["key"] == key and payload["spec"] == spec.model_dump(mode="json") and payload["norm"]["std"] > 0
    predictions = folder.read_predictions()
    predictor = folder.read_predictor()
    assert predictions.logits.shape == (200, 10) and predictions.labels.shape == (200,)
    assert predictions.key == key and predictions.digest == predictor.digest()
    np.testing.assert_allclose(predictions.probs.sum(1), 1, atol=1e-9)
    metrics = folder.read_metrics()
    acc = float((predictions.logits.argmax(1) == predictions.labels).mean())
    assert metrics["test_acc"] == pytest.approx(acc) and metrics["key"] == key
    assert metrics["params"] == models.count_parameters(predictor.net)
    assert metrics["best_epoch"] == 1 + int(np.argmax([float(r["val_acc"]) for r in rows]))
    assert np.array_equal(predictor.logits(DATA.x_test).numpy(), predictions.logits)  # the saved predictor made them


def test_files_follow_the_umask(tmp_path):
    import os

    old = os.umask(0o027)
    try:
        run(cfg(epochs=1), tmp_path)
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert set(modes.values()) == {0o640}, modes


def test_numpy_model_checkpoint_loads_into_torch_twin(tmp_path):
    from fmlab.models.mlp_numpy import NumpyMLP

    result = run(cfg(model="mlp-numpy"), tmp_path)
    predictor = RunDir(tmp_path).read_predictor()
    numpy_net = NumpyMLP(**predictor.spec.model_args)
    numpy_net.load_state_dict(predictor.state_dict())
    x = predictor.normalise(DATA.x_test).numpy()
    np.testing.assert_allclose(numpy_net.forward(x), predictor.logits(DATA.x_test).numpy(), atol=1e-4)
    assert result.metrics["test_acc"] > 0.8


def test_bad_config_values_are_config_errors():
    with pytest.raises(ConfigError, match="unknown key 'lrr'"):
        resolve([("test", {"lrr": 1})])
    with pytest.raises(ConfigError, match="test: lr"):
        resolve([("test", {"lr": -1})])
    with pytest.raises(ConfigError, match="test: epochs"):
        resolve([("test", {"epochs": True})])  # strict: no booleans or strings for numbers
    with pytest.raises(ConfigError, match="test: weight_decay"):
        resolve([("test", {"weight_decay": float("inf")})])
    with pytest.raises(ConfigError, match="test: dropout"):
        resolve([("test", {"dropout": 1.5})])


# ---- the resolved spec ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", models.names())
def test_every_recipe_is_a_valid_config(name):
    recipe = models.recipe(name)
    assert "model_args" not in recipe and "dropout" not in recipe  # the registry's defaults are the network
    spec = resolve([("test", {"model": name})])
    assert {key: getattr(spec, key) for key in recipe} == recipe
    assert spec.model_args == json.loads(json.dumps(models.get(name).defaults))
    assert models.count_parameters(models.build(name)) == models.count_parameters(models.build(name, **spec.model_args))


def test_layers_apply_in_order_and_name_their_errors():
    layers = [("defaults", {"lr": 1e-3, "epochs": 2}), ("baseline", {"lr": 2e-3, "model_args": {"channels": [4, 8]}}),
              ("variant", {"dropout": 0.1}), ("family", {"model": "simple-cnn"})]
    spec = resolve(layers)
    assert spec.lr == 2e-3 and spec.epochs == 2 and spec.model_args == {"channels": [4, 8], "activation": "relu",
                                                                        "dropout": 0.1}
    with pytest.raises(ConfigError, match=r"^baseline: lr"):
        resolve([("defaults", {"lr": 1e-3}), ("baseline", {"lr": "fast"})])
    with pytest.raises(ConfigError, match=r"^defaults: model_args must be a table"):
        resolve([("defaults", {"model_args": 5})])


def test_spec_is_complete_and_round_trips_through_json():
    from fmlab.config import TrainConfig

    spec = resolve([("test", {"model": "cnn"})])
    assert spec.threads == torch.get_num_threads() and "device" not in TrainConfig.model_fields
    again = TrainConfig.model_validate(json.loads(json.dumps(spec.model_dump(mode="json"))))
    assert again == spec and resolve([("saved", again.model_dump(mode="json"))]) == spec


def test_recipe_fills_only_what_the_config_leaves_unset():
    recipe = models.recipe("mlp")
    spec = resolve([("test", {"model": "mlp", "lr": 0.5, "model_args": {"activation": "tanh"}})])
    assert spec.lr == 0.5 and spec.schedule == recipe["schedule"] == "onecycle"  # same optimiser: the group stays
    assert spec.model_args == {"hidden": [512, 256], "activation": "tanh", "dropout": 0.0}
    assert resolve([("t", {"model": "logreg"})]).schedule == "onecycle"
    assert resolve([("t", {"model": "logreg"})]).batch_size == 128


def test_recipe_groups_switch_as_a_whole():
    cnn = resolve([("t", {"model": "cnn"})])
    assert (cnn.optimizer, cnn.weight_decay, cnn.schedule, cnn.tta_flip) == ("adamw", 0.05, "onecycle", True)
    sgd = resolve([("t", {"model": "cnn", "optimizer": "sgd", "lr": 0.05})])
    assert (sgd.weight_decay, sgd.schedule, sgd.lr) == (0.0, "none", 0.05)  # none of AdamW's settings
    assert sgd.augment and sgd.tta_flip  # the augmentation group is untouched
    plain = resolve([("t", {"model": "cnn", "augment": False})])
    assert not plain.tta_flip and plain.crop == 2 and plain.weight_decay == 0.05
    mirrorless = resolve([("t", {"model": "cnn", "flip": False, "augment": True, "crop": 2})])
    assert not mirrorless.tta_flip and mirrorless.crop == 2
    with pytest.raises(ConfigError, match="tta_flip needs training on flipped images"):
        resolve([("t", {"model": "cnn", "augment": False, "tta_flip": True})])
    assert resolve([("t", {"model": "cnn", "crop": 1, "tta_shift": True})]).tta_shift
    assert resolve([("t", {"model": "cnn", "alternate_flip": True})]).alternate_flip
    for unflipped in ({"augment": False}, {"flip": False}):
        with pytest.raises(ConfigError, match="alternate_flip needs training on flipped images"):
            resolve([("t", {"model": "cnn", "alternate_flip": True, **unflipped})])
    for unshifted in ({"crop": 1, "augment": False}, {}):  # the cnn recipe trains without crops
        with pytest.raises(ConfigError, match="tta_shift needs training on shifted images"):
            resolve([("t", {"model": "cnn", "tta_shift": True, **unshifted})])


ROOT = Path(__file__).parents[1]
PRESETS = {p: tomllib.loads((ROOT / "configs" / p).read_text()) for p in ("best.toml", "best_fast.toml")}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_best_accuracy_presets_resolve_under_a_million_parameters(preset: str) -> None:
    spec = resolve([(preset, PRESETS[preset])])
    assert spec.tta_flip and spec.augment and spec.erase > 0
    assert count_parameters(models.build(spec.model, **spec.model_args)) < 1_000_000


def _benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FIXED = {
    **{f"configs/{p}": preset for p, preset in PRESETS.items()},
    **{f"time_to_accuracy {m}": {"model": m, **r} for m, r in _benchmark("time_to_accuracy").REFERENCE.items()},
    "best_preset reference": _benchmark("best_preset").REFERENCE,
}


@pytest.mark.parametrize("name", sorted(FIXED))
def test_presets_and_benchmark_references_take_nothing_from_a_recipe(name, monkeypatch):
    # what they reached was measured with these settings: a later change to the model's recipe must not change them
    as_is = resolve([(name, FIXED[name])])
    spec = models.registry._REGISTRY[as_is.model]
    monkeypatch.setitem(models.registry._REGISTRY, as_is.model, dataclasses.replace(spec, recipe={}))
    assert resolve([(name, FIXED[name])]) == as_is


def test_model_arguments_are_checked_without_building_the_network():
    with pytest.raises(ConfigError, match="over fmlab's limit"):
        resolve([("t", {"model": "mlp", "model_args": {"hidden": [200000, 200000]}})])
    with pytest.raises(ConfigError, match="no argument 'width'"):
        resolve([("t", {"model": "mlp", "model_args": {"width": 3}})])


@pytest.mark.parametrize("steps", [1, 2, 3, 5, 40])
def test_onecycle_runs_on_any_number_of_steps(steps):
    from fmlab.training.learners import Schedule

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], 0.1)
    schedule = Schedule(opt, cfg(schedule="onecycle", epochs=1, lr=0.1), steps)
    lrs = []  # the rate each batch trains with
    for _ in range(steps):
        lrs.append(schedule.lr)
        opt.step()
        schedule.after_batch()
    assert all(0 <= lr <= 0.1 for lr in lrs)
    if steps >= 3:  # warms up, then anneals
        assert lrs[0] < max(lrs) > lrs[-1]


@pytest.mark.parametrize("warmup", [0.1, 0.35, 0.6])
def test_onecycle_peaks_after_its_warmup_share_of_the_steps(warmup):
    from fmlab.training.learners import Schedule

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], 0.1)
    schedule = Schedule(opt, cfg(schedule="onecycle", epochs=2, lr=0.1, warmup=warmup), 20)
    lrs = []
    for _ in range(40):
        lrs.append(schedule.lr)
        opt.step()
        schedule.after_batch()
    assert abs(lrs.index(max(lrs)) - warmup * 40) <= 1 and max(lrs) == pytest.approx(0.1)


def test_unresolved_specs_are_refused():
    from fmlab.config import TrainConfig

    with pytest.raises(ValueError, match="resolved spec"):
        run(TrainConfig(model="mlp", epochs=1))


# ---- run folders: one run each, complete or visibly incomplete -------------------------------------------

def test_a_folder_holding_a_run_is_not_overwritten_unless_asked(tmp_path):
    first = run(cfg(epochs=1), tmp_path)
    with pytest.raises(RunDirError, match="already holds a run; continue it with --resume or replace it with --force"):
        run(cfg(epochs=1, seed=1), tmp_path)
    assert RunDir(tmp_path).read_metrics()["key"] == first.key
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="not part of an fmlab run"):
        run(cfg(epochs=1, seed=1), tmp_path, force=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_an_interrupted_forced_retrain_leaves_no_mix_of_two_runs(tmp_path):
    run(cfg(epochs=2), tmp_path)

    def stop(epoch, record):
        raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        run(cfg(epochs=2, seed=5), tmp_path, force=True, callbacks=[stop])
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {RunDir.CONFIG, RunDir.HISTORY, RunDir.STATE}  # the old checkpoint and results are gone
    with pytest.raises(RunDirError, match="not a finished run: training is unfinished"):
        RunDir(tmp_path).finished()


def test_a_checkpoint_from_another_run_is_detected(tmp_path):
    run(cfg(epochs=1), tmp_path / "a")
    run(cfg(epochs=1, seed=1), tmp_path / "b")
    (tmp_path / "a" / RunDir.CHECKPOINT).write_bytes((tmp_path / "b" / RunDir.CHECKPOINT).read_bytes())
    assert "belong(s) to another run" in RunDir(tmp_path / "a").problem()


def test_cli_train_force_resume_and_errors(tmp_path, capsys, make_trusted):
    syn = make_trusted(train_per_class=30, test_per_class=5)
    out = tmp_path / "run"
    argv = ["train", "--model", "simple-cnn", "--epochs", "1", "--val-size", "100", "--data-dir", str(syn.path),
            "--out", str(out), "--arg", "activation=\"relu\"", "--device", "cpu"]
    code, stdout, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert "test accuracy" in stdout and RunDir(out).problem() is None
    code, _, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, "already holds a run", "--force")
    code, _, err = run_cli(capsys, *argv, "--force")
    assert code == 0, err
    code, _, err = run_cli(capsys, "train", "--out", str(out), "--resume", "--epochs", "3")
    assert_one_line_error(code, err, "--resume continues the saved run as it was; drop --epochs")
    code, _, err = run_cli(capsys, "train", "--out", str(out), "--resume", "--data-dir", str(syn.path))
    assert_one_line_error(code, err, "nothing to resume")
    for bad in (["--optimizer", "rmsprop"], ["--lr", "-1"], ["--model", "resnet999"], ["--arg", "nope"]):
        code, _, err = run_cli(capsys, "train", "--out", str(tmp_path / "bad"), *bad)
        assert_one_line_error(code, err)
        assert not (tmp_path / "bad").exists()


def test_cli_train_refuses_data_that_fails_its_checksum(tmp_path, capsys):
    folder = tmp_path / "data"
    write_idx_folder(folder, DATA)
    code, _, err = run_cli(capsys, "train", "--model", "logreg", "--epochs", "1", "--data-dir", str(folder),
                           "--out", str(tmp_path / "run"))
    assert_one_line_error(code, err, "checksum")
    assert not (tmp_path / "run").exists()


@pytest.mark.integration
@pytest.mark.parametrize("model,floor", [("mlp", 0.85), ("lenet5", 0.86)])
def test_two_epochs_on_real_data(real_data, model, floor):
    result = fit(resolve([("test", {"model": model, "epochs": 2})]), data=real_data, device="cpu", progress=False)
    assert result.metrics["test_acc"] >= floor


def test_precision_is_resolved_for_the_machine_recorded_and_reproducible(tmp_path):
    from fmlab import hardware

    assert resolve([("t", {"model": "cnn"})]).precision == ("bf16" if hardware.fast_bf16() else "fp32")
    assert resolve([("t", {"model": "mlp-numpy"})]).precision == "fp32"
    with pytest.raises(ConfigError, match="computes in NumPy float32"):
        resolve([("t", {"model": "mlp-numpy", "precision": "bf16"})])
    spec = cfg(model="lenet5", precision="bf16", epochs=1)
    a, b = run(spec, tmp_path / "a"), run(spec, tmp_path / "b")
    assert same_weights(weights(a), weights(b))  # the same machine and settings give the same numbers
    assert not same_weights(weights(a), weights(run(cfg(model="lenet5", precision="fp32", epochs=1))))
    metrics = RunDir(tmp_path / "a").read_metrics()
    assert metrics["precision"] == "bf16" and set(metrics["machine"]) >= {"cpu", "capability", "amx_bf16"}
    predictor = a.predictor
    fp32, bf16 = predictor.logits(DATA.x_test), predictor.logits(DATA.x_test, "bf16")
    assert fp32.dtype == bf16.dtype == torch.float32 and 0 < (fp32 - bf16).abs().max() < 0.5


@pytest.mark.parametrize("flags,precision", [({"avx2", "fma"}, "fp32"), ({"avx2", "avx512f", "avx512_bf16"}, "bf16"),
                                             ({"avx512f", "amx_bf16"}, "bf16")])
def test_cpus_with_bf16_dot_products_train_in_bf16_others_in_fp32(monkeypatch, flags, precision):
    from fmlab import hardware

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset(flags))
    assert resolve([("t", {"model": "cnn"})]).precision == precision
    assert resolve([("t", {"model": "cnn", "precision": "fp32"})]).precision == "fp32"


def test_the_default_thread_count_is_the_machines_whatever_a_run_set_before():
    from fmlab.runs import resolve
    from fmlab.runs.spec import MACHINE_THREADS

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if MACHINE_THREADS > 1 else 2)
        assert resolve([("t", {"model": "logreg"})]).threads == MACHINE_THREADS
    finally:
        torch.set_num_threads(before)
