"""`fmlab export --onnx`: same logits as torch, dynamic batch axis, opset recorded, atomic, clean errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fmlab.cli import main
from fmlab.data import load
from fmlab.errors import DataError
from fmlab.infer import export as export_module
from fmlab.infer.export import ExportError, export_onnx
from fmlab.runs import open_predictor
from synthetic import NORM, checkpoint_file

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

@pytest.fixture(scope="module")
def test_images() -> np.ndarray:
    """A few hundred real test images when Fashion-MNIST is installed, else random ones."""
    try:
        return load(download=False).x_test[:300]
    except DataError:
        return np.random.default_rng(0).integers(0, 256, (300, 28, 28), dtype=np.uint8)


def make_run(folder: Path, name: str = "lenet5") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return checkpoint_file(folder / "model.pt", name)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, test_images: np.ndarray) -> tuple[Path, dict]:
    run = make_run(tmp_path_factory.mktemp("run"))
    report = export_onnx(run, run.parent / "model.onnx", opset=17, images=test_images)
    return run, report


def test_matches_torch_and_reports_throughput(exported: tuple[Path, dict], test_images: np.ndarray) -> None:
    _, report = exported
    assert report["verified_images"] == len(test_images)
    assert report["max_abs_diff"] <= 1e-4 and report["same_predictions"] == 1.0
    assert report["torch_images_per_s"] > 0 and report["onnxruntime_images_per_s"] > 0
    assert report["model"] == "lenet5" and report["opset"] == 17


def test_opset_and_metadata_recorded(exported: tuple[Path, dict]) -> None:
    run, _ = exported
    graph = onnx.load(str(run.parent / "model.onnx"))
    assert {o.domain: o.version for o in graph.opset_import}[""] == 17
    meta = {p.key: p.value for p in graph.metadata_props}
    assert meta["fmlab.model"] == "lenet5" and meta["fmlab.opset"] == "17" and meta["fmlab.tta_flip"] == "False"
    assert meta["fmlab.tta_shift"] == "False"
    assert "[0, 255]" in meta["fmlab.input"] and json.loads(meta["fmlab.class_names"])[9] == "Ankle boot"


@pytest.mark.parametrize("batch", [1, 7, 300])
def test_dynamic_batch_axis(batch: int, exported: tuple[Path, dict], test_images: np.ndarray) -> None:
    run, report = exported
    assert report["input_shape"] == ["batch", 1, 28, 28] and report["dynamic_batch"]
    pixels = test_images[:batch].astype(np.float32)[:, None]  # the graph normalises: it takes pixel values
    session = ort.InferenceSession(str(run.parent / "model.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": pixels})
    model = open_predictor(run).net
    with torch.inference_mode():
        want = model((torch.from_numpy(pixels) / 255 - NORM[0]) / NORM[1]).numpy()
    assert got.shape == (batch, 10)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["logreg", "mlp", "mlp-numpy", "simple-cnn", "cnn"])
def test_every_model_exports(name: str, tmp_path: Path, test_images: np.ndarray) -> None:
    run = make_run(tmp_path, name)
    report = export_onnx(run, tmp_path / "m.onnx", images=test_images, limit=40)
    assert report["verified_images"] == 40 and report["max_abs_diff"] <= 1e-4


def test_mismatch_leaves_nothing_behind(tmp_path: Path, test_images: np.ndarray, monkeypatch) -> None:
    run = make_run(tmp_path)
    monkeypatch.setattr(export_module, "TOLERANCE", -1.0)
    with pytest.raises(ExportError, match="differ"):
        export_onnx(run, tmp_path / "out" / "m.onnx", images=test_images, limit=5)
    assert not (tmp_path / "out" / "m.onnx").exists() and list((tmp_path / "out").iterdir()) == []


def test_cli_export(exported: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, _ = exported
    try:
        load(download=False)
    except DataError:
        pytest.skip("Fashion-MNIST not installed: the CLI verifies on the real test set")
    with pytest.raises(SystemExit) as done:
        main(["export", str(run), "--onnx", str(tmp_path / "cli.onnx"), "--limit", "50", "--json"])
    out, err = capsys.readouterr()
    assert done.value.code == 0, err
    report = json.loads(out)
    assert report["verified_images"] == 50 and (tmp_path / "cli.onnx").is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--opset", "3"], "opset"), (["--limit", "0"], "limit")],
)
def test_cli_export_errors(argv: list[str], message: str, exported: tuple[Path, dict], tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    run, _ = exported
    with pytest.raises(SystemExit) as done:
        main(["export", str(run), "--onnx", str(tmp_path / "x.onnx"), *argv])
    _, err = capsys.readouterr()
    assert done.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.onnx").exists()


def test_cli_export_missing_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["export", str(tmp_path / "nope"), "--onnx", str(tmp_path / "x.onnx")])
    _, err = capsys.readouterr()
    assert done.value.code == 2 and "no checkpoint" in err and "Traceback" not in err


@pytest.mark.integration
def test_predict_and_onnx_of_a_tta_cnn_reproduce_the_reported_predictions(real_data, tmp_path, capsys):
    """The model the run scored is the model users deploy: `fmlab predict` on the test images and the ONNX
    export (which averages the flips and shifts inside the graph) give the classes recorded in the run's
    predictions."""
    from fmlab.runs import RunDir, resolve
    from fmlab.training.fit import fit

    spec = resolve([("test", {"model": "cnn", "epochs": 1, "train_size": 3000, "val_size": 1000, "crop": 1,
                              "tta_shift": True, "model_args": {"channels": [8, 16, 32], "hidden": 64}})])
    assert spec.tta_flip and spec.augment and spec.flip  # the cnn recipe: flips, averaged again at test time
    fit(spec, tmp_path / "run", data=real_data, device="cpu", progress=False)
    run = RunDir(tmp_path / "run")
    recorded = run.read_predictions().logits.argmax(1)
    predictor = run.read_predictor()
    with torch.inference_mode():
        plain = predictor.net(predictor.normalise(real_data.x_test)).argmax(1).numpy()
    assert (plain != recorded).sum() > 0  # test-time averaging changes some answers: the checks below can fail
    images = real_data.source.path / "t10k-images-idx3-ubyte.gz"
    with pytest.raises(SystemExit) as done:
        main(["predict", str(run.path), str(images), "--json", "--top-k", "1"])
    out, err = capsys.readouterr()
    assert done.value.code == 0, err
    assert np.array_equal([entry["label"] for entry in json.loads(out)], recorded)
    report = export_onnx(run.path, tmp_path / "cnn.onnx", data_dir=real_data.source.path)
    assert report["verified_images"] == 10_000 and report["max_abs_diff"] <= 1e-4
    session = ort.InferenceSession(str(tmp_path / "cnn.onnx"), providers=["CPUExecutionProvider"])
    (scores,) = session.run(None, {"input": real_data.x_test.astype(np.float32)[:, None]})
    assert np.array_equal(scores.argmax(1), recorded)
