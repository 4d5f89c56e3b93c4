"""evaluate_run / compare_runs on synthetic run directories, and `fmlab evaluate` errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from cli_helpers import assert_one_line_error, run_cli
from fmlab import models
from fmlab.data import CLASS_NAMES
from fmlab.data.split import to_tensor
from fmlab.evaluate import complexity, evaluate_run, plots
from fmlab.evaluate import metrics as M
from fmlab.io import write_json
from fmlab.train import checkpoint
from synthetic import make_data

DATA = make_data(n_train=100, n_test=300)
NORM = (0.25, 0.35)
FAST = {"timing_s": 0.02}
ARTIFACTS = {
    "metrics.json", "classification_report.txt", "confusion_matrix.png", "roc.png", "training_curves.png",
    "reliability.png", "mistakes.png", "attributions.png",
}


def make_run(folder: Path, name: str, data=DATA, predictions: bool = True, seed: int = 0, **model_args) -> Path:
    """A run directory as `fmlab train` writes it, for an untrained (seeded) model."""
    torch.manual_seed(seed)
    args = {**models.get(name).defaults, **model_args}
    model = models.build(name, **args).eval()
    config = {"model": name, "model_args": args, "seed": seed, "epochs": 3}
    folder.mkdir(parents=True)
    checkpoint.save(folder / "checkpoint.pt", checkpoint.model_payload(model, name, args, config, NORM))
    write_json(folder / "config.json", config)
    with open(folder / "history.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"])
        for e in range(1, 4):
            w.writerow([e, 2.0 / e, 0.5 + 0.1 * e, 2.1 / e, 0.45 + 0.1 * e, 1e-3, 1.5])
    write_json(folder / "metrics.json", {"status": "finished", "train_time_s": 4.5, "epochs_run": 3, "best_epoch": 3})
    if predictions:
        with torch.no_grad():
            logits = model(to_tensor(data.x_test, *NORM)).numpy().astype(np.float32)
        probs = torch.from_numpy(logits).softmax(1).numpy()
        np.savez_compressed(folder / "predictions.npz", logits=logits, probs=probs, labels=data.y_test)
    return folder


@pytest.fixture(scope="module")
def cnn_result(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("runs") / "simple", "simple-cnn")
    return run, evaluate_run(run, data=DATA, **FAST)


def test_evaluate_run_writes_every_artifact(cnn_result):
    run, result = cnn_result
    out = run / "eval"
    assert result["out_dir"] == str(out)
    assert {p.name for p in out.iterdir()} >= ARTIFACTS
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["predictions_source"] == "predictions.npz"
    assert saved["model"] == "simple-cnn" and saved["family"] == "cnn"
    assert set(saved["artifacts"]) == ARTIFACTS
    report = (out / "classification_report.txt").read_text()
    assert all(name in report for name in CLASS_NAMES)


def test_run_metrics_match_sklearn_on_predictions(cnn_result):
    run, result = cnn_result
    z = np.load(run / "predictions.npz")
    pred = z["probs"].argmax(1)
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(z["labels"], pred))
    assert result["confusion_matrix"] == skm.confusion_matrix(z["labels"], pred, labels=range(10)).tolist()
    assert result["averages"]["macro"]["f1"] == pytest.approx(
        skm.f1_score(z["labels"], pred, average="macro", labels=range(10), zero_division=0)
    )


def test_complexity_and_training_recorded(cnn_result):
    run, result = cnn_result
    c = result["complexity"]
    model = models.build("simple-cnn")
    assert c["params"] == models.count_parameters(model)
    assert c["macs_per_image"] == complexity.count_macs(model) > c["params"]
    assert c["checkpoint_bytes"] == (run / "checkpoint.pt").stat().st_size
    assert c["throughput_images_per_s"] > 0 and c["latency_ms"] > 0 and c["throughput_batch_size"] == 256
    assert result["training"]["train_time_s"] == 4.5
    faith = result["faithfulness"]["gradcam"]
    assert 0 <= faith["deletion_auc"] <= 1 and 0 <= faith["insertion_auc"] <= 1


def test_count_macs_by_hand():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(2 * 784, 10))
    assert complexity.count_macs(model) == 28 * 28 * 2 * 9 + 2 * 784 * 10


def test_roc_figure_has_ten_class_panels_and_an_overlay(cnn_result):
    run, result = cnn_result
    labels, probs = M.load_predictions(run / "predictions.npz")
    fig = plots.roc_figure(labels, probs, CLASS_NAMES, result["roc_auc"])
    assert len(fig.axes) == 11
    panels, overlay = fig.axes[1:], fig.axes[0]
    for ax, name in zip(panels, CLASS_NAMES, strict=True):
        assert ax.get_title().startswith(f"{name}: AUC 0.") or ax.get_title() == f"{name}: AUC 1.0000"
    labels_in_legend = [t.get_text() for t in overlay.get_legend().get_texts()]
    assert len(labels_in_legend) == 12
    assert any(t.startswith("micro-average") for t in labels_in_legend)
    assert any(t.startswith("macro-average") for t in labels_in_legend)


def test_ffnn_run_without_predictions_uses_the_checkpoint_and_gradients(tmp_path):
    run = make_run(tmp_path / "mlp", "mlp", predictions=False, hidden=[32])
    result = evaluate_run(run, tmp_path / "out", data=DATA, **FAST)
    assert result["predictions_source"] == "checkpoint"
    assert set(result["faithfulness"]) == {"saliency", "integrated_gradients"}
    model, _ = checkpoint.load_model(run)
    with torch.no_grad():
        pred = model(to_tensor(DATA.x_test, *NORM)).argmax(1).numpy()
    assert result["accuracy"] == pytest.approx((pred == DATA.y_test).mean())
    assert (tmp_path / "out" / "attributions.png").is_file()


# ---- the command line ---------------------------------------------------------------------------


@pytest.fixture
def trusted_data(make_trusted):
    """A small synthetic data folder whose checksums are accepted."""
    return make_trusted(train_per_class=2, test_per_class=5)




def test_cli_missing_checkpoint(tmp_path, capsys):
    run = make_run(tmp_path / "run", "logreg")
    (run / "checkpoint.pt").unlink()
    code, _, err = run_cli(capsys, "evaluate", str(run))
    assert_one_line_error(code, err, "no checkpoint")
    assert not (run / "eval").exists()


def test_cli_corrupt_checkpoint(tmp_path, capsys):
    run = make_run(tmp_path / "run", "logreg")
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    code, _, err = run_cli(capsys, "evaluate", str(run), "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, "corrupt checkpoint")
    assert not (tmp_path / "out").exists()


def test_cli_checkpoint_of_another_architecture(tmp_path, capsys):
    run = make_run(tmp_path / "run", "simple-cnn")
    write_json(run / "config.json", {"model": "lenet5", "model_args": {}})
    good = make_run(tmp_path / "good", "logreg")
    code, _, err = run_cli(capsys, "evaluate", str(good), str(run), "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, "simple-cnn", "lenet5")
    assert not (tmp_path / "out").exists()  # nothing written, not even for the good run


def test_cli_missing_run_dir(tmp_path, capsys):
    code, _, err = run_cli(capsys, "evaluate", str(tmp_path / "nope"))
    assert_one_line_error(code, err, "no such run directory")


def test_cli_error_subprocess_has_no_traceback(tmp_path):
    run = make_run(tmp_path / "run", "logreg")
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    proc = subprocess.run([Path(sys.executable).parent / "fmlab", "evaluate", str(run)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_cli_evaluates_one_run(tmp_path, capsys, trusted_data):
    run = make_run(tmp_path / "runs" / "simple", "simple-cnn", predictions=False)
    code, out, err = run_cli(capsys, "evaluate", str(run), "--data-dir", str(trusted_data.path))
    assert code == 0, err
    assert "simple: simple-cnn, accuracy" in out and "gradcam deletion AUC" in out
    assert {p.name for p in (run / "eval").iterdir()} >= ARTIFACTS


def test_cli_compares_runs_side_by_side(tmp_path, capsys, trusted_data):
    runs = [make_run(tmp_path / "runs" / "a" / "seed0", "simple-cnn", predictions=False),
            make_run(tmp_path / "runs" / "b" / "seed0", "logreg", predictions=False, seed=1)]
    code, out, err = run_cli(capsys, "evaluate", *map(str, runs), "--data-dir", str(trusted_data.path))
    assert code == 0, err
    assert out.count("deletion AUC") == 2
    cmp = tmp_path / "runs" / "comparison"
    assert (cmp / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((cmp / "comparison.json").read_text())
    assert saved["runs"] == ["a-seed0", "b-seed0"]
    assert len(saved["images"]["per_class"]) == 10
    assert 0 < len(saved["images"]["disagreements"]) <= 6  # two untrained models disagree somewhere
    assert saved["models"]["a-seed0"]["method"] == "gradcam"
    assert saved["models"]["b-seed0"]["method"] == "integrated_gradients"
    for name in saved["runs"]:
        assert {p.name for p in (cmp / name).iterdir()} >= ARTIFACTS
        rows = saved["models"][name]["predictions"]
        assert len(rows) == 10 + len(saved["images"]["disagreements"])
        assert saved["models"][name]["faithfulness"]["deletion_auc_random"] is not None
