"""evaluate_run / compare_runs on synthetic run directories, and `fmlab evaluate` errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sklearn import metrics as skm

from cli_helpers import assert_one_line_error, run_cli
from fmlab import models
from fmlab.data import CLASS_NAMES
from fmlab.evaluation import complexity, evaluate_run, plots
from fmlab.runs import RunDir
from synthetic import make_data, trained_run

DATA = make_data(n_train=100, n_test=300)
FAST = {"timing_s": 0.02}
FIGURES = ("confusion_matrix", "roc", "training_curves", "reliability", "mistakes")
# every figure as PNG (the report) and as vector PDF (papers)
ARTIFACTS = {"metrics.json", "classification_report.txt"} | {f"{f}.{ext}" for f in FIGURES for ext in ("png", "pdf")}


def make_run(folder: Path, name: str, seed: int = 0, **model_args) -> RunDir:
    """A finished run folder as `fmlab train` writes it (one epoch on the synthetic set)."""
    return trained_run(folder, name, DATA, seed=seed, model_args=model_args)


@pytest.fixture(scope="module")
def cnn_result(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("runs") / "simple", "simple-cnn")
    return run, evaluate_run(run.path, data=DATA, **FAST)


def test_evaluate_run_writes_every_artifact(cnn_result):
    run, result = cnn_result
    out = run.eval.path
    assert result["out_dir"] == str(out)
    assert {p.name for p in out.iterdir()} == ARTIFACTS
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pdf = png.with_suffix(".pdf").read_bytes()
        assert pdf.startswith(b"%PDF-") and b"/Type /Page" in pdf
    saved = run.eval.read_metrics()
    assert saved["predictions_source"] == "recorded" and saved["key"] == run.read_spec()[1]
    assert saved["model"] == "simple-cnn" and saved["family"] == "cnn"
    assert set(saved["artifacts"]) == ARTIFACTS
    report = (out / "classification_report.txt").read_text()
    assert all(name in report for name in CLASS_NAMES)
    assert run.problem(evaluated=True) is None
    (out / "roc.png").unlink()
    assert "evaluation outputs are missing (roc.png)" in run.problem(evaluated=True)


def test_run_metrics_match_sklearn_on_predictions(cnn_result):
    run, result = cnn_result
    recorded = run.read_predictions()
    pred = recorded.probs.argmax(1)
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(recorded.labels, pred))
    assert result["confusion_matrix"] == skm.confusion_matrix(recorded.labels, pred, labels=range(10)).tolist()
    assert result["averages"]["macro"]["f1"] == pytest.approx(
        skm.f1_score(recorded.labels, pred, average="macro", labels=range(10), zero_division=0)
    )


def test_complexity_and_training_recorded(cnn_result):
    run, result = cnn_result
    c = result["complexity"]
    model = models.build("simple-cnn")
    assert c["params"] == models.count_parameters(model)
    assert c["macs_per_image"] == complexity.count_macs(model) > c["params"]
    assert c["checkpoint_bytes"] == run.checkpoint.stat().st_size
    assert c["throughput_images_per_s"] > 0 and c["latency_ms"] > 0 and c["throughput_batch_size"] == 256
    assert result["training"]["train_time_s"] == run.read_metrics()["train_time_s"] > 0
    calibration = result["calibration"]
    assert calibration["temperature"] > 0 and calibration["val_nll_after"] <= calibration["val_nll_before"]
    assert calibration["ece_before"] == pytest.approx(result["ece"])


def test_macs_count_the_flip_averaged_predictor_twice(tmp_path):
    run = trained_run(tmp_path / "cnn", "cnn", DATA, model_args={"channels": [4, 8, 8], "hidden": 16})
    predictor = run.read_predictor()
    assert predictor.spec.tta_flip
    assert complexity.count_macs(predictor.module) == 2 * complexity.count_macs(predictor.net)
    shifted = trained_run(tmp_path / "shift", "cnn", DATA, crop=1, tta_shift=True,
                          model_args={"channels": [4, 8, 8], "hidden": 16})
    assert complexity.count_macs(shifted.read_predictor().module) == 6 * complexity.count_macs(predictor.net)


def test_count_macs_by_hand():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(2 * 784, 10))
    assert complexity.count_macs(model) == 28 * 28 * 2 * 9 + 2 * 784 * 10


def test_roc_figure_has_ten_class_panels_and_an_overlay(cnn_result):
    run, result = cnn_result
    recorded = run.read_predictions()
    fig = plots.roc_figure(recorded.labels, recorded.probs, CLASS_NAMES, result["roc_auc"])
    assert len(fig.axes) == 11
    panels, overlay = fig.axes[1:], fig.axes[0]
    for ax, name in zip(panels, CLASS_NAMES, strict=True):
        assert ax.get_title().startswith(f"{name}: AUC 0.") or ax.get_title() == f"{name}: AUC 1.0000"
    labels_in_legend = [t.get_text() for t in overlay.get_legend().get_texts()]
    assert len(labels_in_legend) == 12
    assert any(t.startswith("micro-average") for t in labels_in_legend)
    assert any(t.startswith("macro-average") for t in labels_in_legend)


def test_ffnn_run_on_another_test_set_is_scored_by_its_predictor(tmp_path):
    run = make_run(tmp_path / "mlp", "mlp", hidden=[32])
    other = make_data(n_train=100, n_test=300, seed=7)
    result = evaluate_run(run.path, tmp_path / "out", data=other, explain_it=True, **FAST)
    assert result["predictions_source"] == "predictor"
    assert {c["method"] for c in result["explanation"]["candidates"]} == {"saliency", "integrated_gradients"}
    pred = run.read_predictor().logits(other.x_test).argmax(1).numpy()
    assert result["accuracy"] == pytest.approx((pred == other.y_test).mean())
    assert (tmp_path / "out" / "attributions.png").is_file()


def test_evaluation_never_writes_into_a_run_folder(tmp_path, capsys):
    run = make_run(tmp_path / "run", "logreg")
    before = run.read_metrics()
    code, _, err = run_cli(capsys, "evaluate", str(run.path), "--out", str(run.path))
    assert_one_line_error(code, err, "is a run folder")
    assert run.read_metrics() == before


# ---- the command line ---------------------------------------------------------------------------


@pytest.fixture
def trusted_data(make_trusted):
    """A small synthetic data folder whose checksums are accepted."""
    return make_trusted(train_per_class=2, test_per_class=5)




def test_cli_missing_checkpoint(tmp_path, capsys):
    run = make_run(tmp_path / "run", "logreg")
    run.checkpoint.unlink()
    code, _, err = run_cli(capsys, "evaluate", str(run.path))
    assert_one_line_error(code, err, "not a finished run", "no checkpoint")
    assert not run.eval.path.exists()


def test_cli_corrupt_checkpoint(tmp_path, capsys):
    run = make_run(tmp_path / "run", "logreg")
    data = run.checkpoint.read_bytes()
    run.checkpoint.write_bytes(data[: len(data) // 2])
    code, _, err = run_cli(capsys, "evaluate", str(run.path), "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, "not a PyTorch checkpoint, or a damaged one (it looks like a damaged zip archive)")
    assert not (tmp_path / "out").exists()


def test_cli_checkpoint_of_another_run(tmp_path, capsys):
    run = make_run(tmp_path / "run", "simple-cnn")
    other = make_run(tmp_path / "other", "lenet5")
    run.checkpoint.write_bytes(other.checkpoint.read_bytes())
    good = make_run(tmp_path / "good", "logreg")
    code, _, err = run_cli(capsys, "evaluate", str(good.path), str(run.path), "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, "not a finished run", "belong(s) to another run")
    assert not (tmp_path / "out").exists()  # nothing written, not even for the good run


def test_cli_predictions_of_other_weights(tmp_path, capsys):
    run = make_run(tmp_path / "run", "logreg")
    other = make_run(tmp_path / "other", "logreg", seed=1)
    recorded = other.read_predictions()
    run.save_predictions(recorded.logits, DATA.x_test, recorded.labels, run.read_spec()[1], recorded.digest)
    code, _, err = run_cli(capsys, "evaluate", str(run.path))
    assert_one_line_error(code, err, "was not made by the weights in")


def test_cli_missing_run_dir(tmp_path, capsys):
    code, _, err = run_cli(capsys, "evaluate", str(tmp_path / "nope"))
    assert_one_line_error(code, err, "no such run folder")


def test_cli_error_subprocess_has_no_traceback(tmp_path):
    run = make_run(tmp_path / "run", "logreg")
    run.checkpoint.write_bytes(b"not a checkpoint")
    proc = subprocess.run([Path(sys.executable).parent / "fmlab", "evaluate", str(run.path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_cli_evaluates_one_run(tmp_path, capsys, trusted_data):
    run = make_run(tmp_path / "runs" / "simple", "simple-cnn")
    code, out, err = run_cli(capsys, "evaluate", str(run.path), "--data-dir", str(trusted_data.path))
    assert code == 0, err
    assert "simple: simple-cnn, accuracy" in out and ("explains this model" in out or "does not explain" in out)
    assert {p.name for p in run.eval.path.iterdir()} == ARTIFACTS | {"attributions.png", "attributions.pdf"}
    explanation = run.eval.read_metrics()["explanation"]
    assert explanation["method"] in ("gradcam", "hirescam", "guided_gradcam") and len(explanation["candidates"]) == 9
    assert explanation["explains"] == (explanation["faithfulness"]["beats_random"] and explanation["sanity"]["passes"])
    assert run.eval.read_metrics()["predictions_source"] == "predictor"  # another test set than training's


def test_cli_compares_runs_side_by_side(tmp_path, capsys, trusted_data):
    runs = [make_run(tmp_path / "runs" / "a" / "seed0", "simple-cnn"),
            make_run(tmp_path / "runs" / "b" / "seed0", "logreg", seed=1)]
    code, out, err = run_cli(capsys, "evaluate", *(str(r.path) for r in runs), "--data-dir", str(trusted_data.path))
    assert code == 0, err
    assert out.count("explain") >= 2 and "rank correlation" in out  # two verdicts and the maps' agreement
    cmp = tmp_path / "runs" / "comparison"
    assert (cmp / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((cmp / "comparison.json").read_text())
    assert saved["runs"] == ["a-seed0", "b-seed0"]
    assert len(saved["images"]["per_class"]) == 10
    assert 0 < len(saved["images"]["disagreements"]) <= 6  # two barely trained models disagree somewhere
    assert saved["models"]["a-seed0"]["explanation"]["layer"] is not None  # a CNN: a layer method
    assert saved["models"]["b-seed0"]["explanation"]["method"] in ("saliency", "integrated_gradients")
    assert set(saved["agreement"]) == {"a-seed0 vs b-seed0"} and set(saved["robustness"]) == set(saved["runs"])
    assert (cmp / "robustness.png").read_bytes()[:4] == b"\x89PNG"
    assert (cmp / "robustness.pdf").read_bytes()[:5] == (cmp / "comparison.pdf").read_bytes()[:5] == b"%PDF-"
    for name in saved["runs"]:
        assert {p.name for p in (cmp / name).iterdir()} == ARTIFACTS
        rows = saved["models"][name]["predictions"]
        assert len(rows) == 10 + len(saved["images"]["disagreements"])
        sample = saved["images"]["explanation_sample"]
        assert saved["models"][name]["explanation"]["faithfulness"]["images"] == len(sample)
