import csv
import json

import numpy as np
import pytest
import torch

from fmlab import models
from fmlab.config import TrainConfig, validate
from fmlab.errors import ConfigError, Interrupted
from fmlab.train import checkpoint
from fmlab.train.loop import fit
from synthetic import make_data, write_idx_folder

DATA = make_data(n_train=1000, n_test=200)


def cfg(**kw) -> TrainConfig:
    base = {"model": "mlp", "epochs": 2, "batch_size": 64, "val_size": 200, "device": "cpu", "lr": 3e-3}
    return TrainConfig(**{**base, **kw})


def weights(result) -> dict[str, torch.Tensor]:
    return result.learner.weights()


def same_weights(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("model", ["mlp", "mlp-numpy", "lenet5"])
def test_same_seed_same_history_and_weights(model):
    a = fit(cfg(model=model, augment=True), data=DATA, progress=False)
    b = fit(cfg(model=model, augment=True), data=DATA, progress=False)
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in a.history]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in b.history]
    assert same_weights(weights(a), weights(b))
    c = fit(cfg(model=model, seed=1), data=DATA, progress=False)
    assert not same_weights(weights(a), weights(c))


def test_learns_synthetic_task():
    result = fit(cfg(epochs=3), data=DATA, progress=False)
    assert result.metrics["test_acc"] > 0.9
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


@pytest.mark.parametrize("penalty", ["l1", "l2"])
def test_penalties_change_loss_and_shrink_weights(penalty):
    plain = fit(cfg(), data=DATA, progress=False)
    reg = fit(cfg(**{penalty: 1e-3 if penalty == "l1" else 1e-2}), data=DATA, progress=False)
    assert reg.history[0]["train_loss"] > plain.history[0]["train_loss"]
    norm = (lambda w: w.abs().sum()) if penalty == "l1" else (lambda w: w.pow(2).sum())
    size = lambda r: sum(norm(w) for k, w in weights(r).items() if w.dim() > 1)  # noqa: E731
    assert size(reg) < 0.8 * size(plain)


def test_weight_decay_shrinks_weights():
    plain = fit(cfg(optimizer="sgd", lr=0.05), data=DATA, progress=False)
    decayed = fit(cfg(optimizer="sgd", lr=0.05, weight_decay=0.05), data=DATA, progress=False)
    l2 = lambda r: sum(w.pow(2).sum() for w in weights(r).values())  # noqa: E731
    assert l2(decayed) < l2(plain)


def test_early_stopping_stops_before_the_budget():
    result = fit(cfg(epochs=30, early_stopping=2, monitor="val_acc", lr=1e-2), data=DATA, progress=False)
    assert result.status == "early_stopped"
    assert len(result.history) < 30
    assert len(result.history) - result.best_epoch <= 2


def test_divergence_is_detected_not_a_crash(tmp_path):
    result = fit(cfg(optimizer="sgd", lr=10.0, momentum=0.99, l2=100.0, epochs=3), tmp_path, data=DATA, progress=False)
    assert result.status == "diverged"
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "diverged"
    assert np.isfinite(np.load(tmp_path / "predictions.npz")["logits"]).all()


@pytest.mark.parametrize("schedule", ["step", "cosine", "onecycle", "plateau"])
def test_schedules_change_the_learning_rate(schedule):
    result = fit(cfg(schedule=schedule, epochs=4, step_size=1, gamma=0.5), data=DATA, progress=False)
    lrs = [h["lr"] for h in result.history]
    if schedule == "plateau":
        assert all(lr <= 3e-3 for lr in lrs)
    else:
        assert lrs[-1] < lrs[0]


SMALL_CNN = {"channels": [4, 8, 8], "hidden": 16}


@pytest.mark.parametrize(
    "model,schedule,args", [("mlp", "onecycle", {}), ("mlp-numpy", "cosine", {}), ("cnn", "plateau", SMALL_CNN)]
)
def test_resume_after_interrupt_matches_uninterrupted_run(tmp_path, model, schedule, args):
    config = cfg(model=model, epochs=3, schedule=schedule, optimizer="adam", augment=True, train_size=600,
                 model_args=args)
    full = fit(config, tmp_path / "full", data=DATA, progress=False)

    def stop(epoch, record):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted, match="--resume"):
        fit(config, tmp_path / "cut", data=DATA, progress=False, callbacks=[stop])
    assert (tmp_path / "cut" / "last.pt").is_file()
    resumed = fit(config, tmp_path / "cut", data=DATA, progress=False, resume=True)
    assert same_weights(weights(full), weights(resumed))
    assert [h["val_acc"] for h in full.history] == [h["val_acc"] for h in resumed.history]
    assert not (tmp_path / "cut" / "last.pt").exists()


def test_run_directory_contents(tmp_path):
    fit(cfg(model="lenet5"), tmp_path, data=DATA, progress=False)
    assert {p.name for p in tmp_path.iterdir()} == {
        "config.json", "history.csv", "checkpoint.pt", "predictions.npz", "metrics.json"
    }
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model"] == "lenet5" and config["model_args"]
    rows = list(csv.DictReader((tmp_path / "history.csv").open()))
    assert len(rows) == 2
    assert set(rows[0]) == {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"}
    payload = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert payload["model"] == "lenet5" and payload["norm"]["std"] > 0
    model, _ = checkpoint.load_model(tmp_path)
    pred = np.load(tmp_path / "predictions.npz")
    assert pred["logits"].shape == (200, 10) and pred["labels"].shape == (200,)
    np.testing.assert_allclose(pred["probs"].sum(1), 1, atol=1e-5)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    acc = float((pred["logits"].argmax(1) == pred["labels"]).mean())
    assert metrics["test_acc"] == pytest.approx(acc)
    assert metrics["params"] == sum(p.numel() for p in model.parameters())
    assert metrics["best_epoch"] == 1 + int(np.argmax([float(r["val_acc"]) for r in rows]))


def test_numpy_model_checkpoint_loads_into_torch_twin(tmp_path):
    result = fit(cfg(model="mlp-numpy"), tmp_path, data=DATA, progress=False)
    model, payload = checkpoint.load_model(tmp_path)
    pred = np.load(tmp_path / "predictions.npz")
    x = (torch.from_numpy(DATA.x_test).unsqueeze(1).float() / 255 - payload["norm"]["mean"]) / payload["norm"]["std"]
    with torch.no_grad():
        np.testing.assert_allclose(model(x).numpy(), pred["logits"], atol=1e-4)
    assert result.metrics["test_acc"] > 0.8


def test_bad_config_values_are_config_errors():
    with pytest.raises(ConfigError, match="unknown key 'lrr'"):
        validate(TrainConfig, {"lrr": 1})
    with pytest.raises(ConfigError, match="lr"):
        validate(TrainConfig, {"lr": -1})


@pytest.mark.parametrize("name", models.names())
def test_every_recipe_is_a_valid_config(name):
    config = TrainConfig(model=name)
    for key, value in models.recipe(name).items():
        got = getattr(config, key)
        assert got == value or (key == "model_args" and value.items() <= got.items())


def test_recipe_fills_only_what_the_config_leaves_unset():
    recipe = models.recipe("mlp")
    config = TrainConfig(model="mlp", lr=0.5, model_args={"activation": "tanh"})
    assert config.lr == 0.5 and config.schedule == recipe["schedule"] == "onecycle"
    assert config.model_args == {**recipe["model_args"], "activation": "tanh"}
    assert TrainConfig(model="mlp", model_args={"hidden": [32]}).model_args["hidden"] == [32]
    assert TrainConfig(model="logreg").schedule == "onecycle" and TrainConfig(model="logreg").batch_size == 128
    assert TrainConfig(model="no-such-model").lr == TrainConfig.model_fields["lr"].default


@pytest.mark.parametrize("steps", [1, 2, 3, 5, 40])
def test_onecycle_runs_on_any_number_of_steps(steps):
    from fmlab.train.learners import Schedule

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


def test_flip_tta_follows_flip_training():
    assert TrainConfig(model="cnn").tta_flip  # the recipe trains on flips and averages flipped views
    assert not TrainConfig(model="cnn", augment=False).tta_flip
    assert not TrainConfig(model="cnn", flip=False).tta_flip
    with pytest.raises(ConfigError, match="tta_flip needs training on flipped images"):
        validate(TrainConfig, {"model": "cnn", "augment": False, "tta_flip": True})


def test_recipe_weight_decay_follows_its_optimizer():
    assert TrainConfig(model="cnn").weight_decay == 0.05  # the recipe's AdamW decay
    assert TrainConfig(model="cnn", optimizer="adamw").weight_decay == 0.05
    assert TrainConfig(model="cnn", optimizer="sgd").weight_decay == 0.0
    assert TrainConfig(model="cnn", optimizer="sgd", weight_decay=5e-4).weight_decay == 5e-4


def test_cli_train_and_errors(tmp_path, capsys):
    from fmlab.cli import main

    folder = tmp_path / "data"
    write_idx_folder(folder, DATA)
    out = tmp_path / "run"
    argv = ["train", "--model", "simple-cnn", "--epochs", "1", "--val-size", "200", "--device", "cpu",
            "--data-dir", str(folder), "--out", str(out), "--arg", "activation=\"relu\""]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2  # the synthetic files do not match the official checksums
    assert "checksum" in capsys.readouterr().err
    from fmlab.data import fashion_mnist

    sums = write_idx_folder(folder, DATA)
    original = dict(fashion_mnist.CHECKSUMS)
    fashion_mnist.CHECKSUMS.update(sums)
    try:
        with pytest.raises(SystemExit) as exit_:
            main(argv)
    finally:
        fashion_mnist.CHECKSUMS.update(original)
    assert exit_.value.code == 0
    assert "test accuracy" in capsys.readouterr().out
    assert (out / "checkpoint.pt").is_file()
    for bad in (["--optimizer", "rmsprop"], ["--lr", "-1"], ["--model", "resnet999"], ["--arg", "nope"]):
        with pytest.raises(SystemExit) as exit_:
            main(["train", "--out", str(tmp_path / "bad"), *bad])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert not (tmp_path / "bad").exists()


@pytest.mark.integration
@pytest.mark.parametrize("model,floor", [("mlp", 0.85), ("lenet5", 0.86)])
def test_two_epochs_on_real_data(real_data, model, floor):
    result = fit(TrainConfig(model=model, epochs=2, device="cpu"), data=real_data, progress=False)
    assert result.metrics["test_acc"] >= floor
