"""`fmlab predict`: every kind of input, the bad-input corpus, and checkpoints that must be refused."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fmlab import models
from fmlab.cli import main
from fmlab.data import idx
from fmlab.errors import DataError
from fmlab.infer.images import ImageError, decode, load
from fmlab.infer.predict import predict
from fmlab.runs import Predictor, RunDir, open_predictor, resolve
from fmlab.runs.predictor import PredictorModule
from fmlab.training import checkpoint
from fmlab.training.checkpoint import CheckpointError
from synthetic import NORM, checkpoint_file, trained_run

CORPUS = Path(__file__).parent / "bad_inputs"
SPECS = {name: resolve([("test", {"model": name})]).model_dump(mode="json") for name in ("lenet5", "logreg")}
BAD_IMAGES = sorted(p for p in CORPUS.iterdir() if p.suffix in {".png", ".npy", ".idx"})
BAD_CHECKPOINTS = sorted(CORPUS.glob("*.pt"))
@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished lenet5 run folder."""
    return trained_run(tmp_path_factory.mktemp("runs") / "lenet5", "lenet5").path


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 60x40 RGB picture of a light block on black, saved as PNG."""
    picture = np.zeros((60, 40, 3), np.uint8)
    picture[10:50, 8:32] = (200, 180, 160)
    path = tmp_path_factory.mktemp("images") / "good.png"
    Image.fromarray(picture).save(path)
    return path


def cli(*argv: object, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def assert_one_line_error(err: str, *names: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == max(1, len(names)), err
    assert "Traceback" not in err
    for line, name in zip(lines, names, strict=False):
        assert line.startswith("error: ") and name in line


# --- inputs that load ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "RGBA", "LA", "I;16", "CMYK"])
def test_any_colour_mode_becomes_28x28_light_on_dark(mode: str, tmp_path: Path) -> None:
    picture = np.full((90, 50), 255, np.uint8)
    picture[20:70, 10:40] = 30  # dark object on white: a product photo
    image = Image.fromarray(picture).convert(mode)
    if mode == "I;16":
        image = Image.fromarray(picture.astype(np.uint16) * 257)
    path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    image.save(path, format="JPEG" if mode == "CMYK" else "PNG")
    out = load(path, invert=True)
    assert out.shape == (1, 28, 28) and out.dtype == np.uint8
    assert out[0, :, :2].max() < 40 and out[0, 14, 14] > 180  # black margins, light centre
    assert (out[0].max(axis=1) > 100).sum() == 28  # the object's longest side fills the height


def test_transparent_background_is_background(tmp_path: Path) -> None:
    rgba = np.zeros((30, 30, 4), np.uint8)
    rgba[5:25, 10:20] = (255, 255, 255, 255)  # opaque white object, transparent elsewhere
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = load(tmp_path / "a.png")[0]
    assert out[14, 14] > 200 and out[:, :5].max() == 0


def test_arrays_and_idx_files(tmp_path: Path) -> None:
    stack = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    np.save(tmp_path / "u8.npy", stack)
    np.save(tmp_path / "unit.npy", stack[0] / 255.0)
    np.save(tmp_path / "byte_range.npy", stack.astype(np.float32))
    idx.write(tmp_path / "x-idx3-ubyte.gz", stack)
    assert np.array_equal(load(tmp_path / "u8.npy"), stack)
    assert np.array_equal(load(tmp_path / "unit.npy"), stack[:1])
    assert np.array_equal(load(tmp_path / "byte_range.npy"), stack)
    assert np.array_equal(load(tmp_path / "x-idx3-ubyte.gz"), stack)
    assert np.array_equal(load(tmp_path / "u8.npy", invert=True), 255 - stack)


@pytest.mark.parametrize(
    ("array", "message"),
    [(np.full((28, 28), 300.0), "values span"), (np.full((28, 28), np.nan), "NaN"),
     (np.zeros((0, 28, 28)), "shape"), (np.zeros((28, 28), complex), "dtype"), (np.zeros((2, 1, 28, 28)), "shape")],
)
def test_bad_arrays(array: np.ndarray, message: str, tmp_path: Path) -> None:
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(ImageError, match=message):
        load(tmp_path / "bad.npy")


class Recorder(torch.nn.Module):
    """A linear scorer that keeps every input it is shown."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []
        self.out = torch.nn.Linear(784, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        return self.out(x.flatten(1))


def test_test_time_averaging_runs_the_shifted_and_mirrored_views() -> None:
    torch.manual_seed(0)
    pixels = torch.randint(1, 256, (3, 1, 28, 28)).float()  # no background pixel: a shift's gap shows
    net = Recorder()
    down_right, up_left = torch.zeros_like(pixels), torch.zeros_like(pixels)
    down_right[..., 1:, 1:], up_left[..., :-1, :-1] = pixels[..., :-1, :-1], pixels[..., 1:, 1:]
    views = [pixels, down_right, up_left]
    views += [view.flip(-1) for view in views]
    scores = PredictorModule(net, 0.25, 0.5, tta_flip=True, tta_shift=True)(pixels)
    shown = [(view / 255.0 - 0.25) / 0.5 for view in views]
    assert len(net.seen) == 6 and all(torch.equal(a, b) for a, b in zip(net.seen, shown, strict=True))
    torch.testing.assert_close(scores, torch.stack([net(x).log_softmax(1) for x in shown]).mean(0))
    shifted_only = PredictorModule(net, 0.25, 0.5, tta_flip=False, tta_shift=True)(pixels)
    torch.testing.assert_close(shifted_only, torch.stack([net(x).log_softmax(1) for x in shown[:3]]).mean(0))
    torch.testing.assert_close(PredictorModule(net, 0.25, 0.5, False, False)(pixels), net(shown[0]))


def test_predict_library_call(run: Path, good: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "two.npy", np.zeros((2, 28, 28), np.uint8))
    entries = predict(run, [good, tmp_path / "two.npy", CORPUS / "empty.png"], top_k=4)
    assert [e.get("index") for e in entries] == [0, 0, 1, None]
    assert "empty" in entries[3]["error"]
    for entry in entries[:3]:
        assert len(entry["top"]) == 4 and entry["prediction"] == entry["top"][0]["class"]
        probs = [t["probability"] for t in entry["top"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001


def test_cli_prints_top_k_and_json(run: Path, good: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli("predict", run / RunDir.CHECKPOINT, good, "--top-k", 2, capsys=capsys)
    assert code == 0 and err == ""
    assert out.startswith(f"{good}: ") and out.count("%") == 2
    code, out, _ = cli("predict", run, good, "--json", capsys=capsys)
    assert code == 0 and json.loads(out)[0]["file"] == str(good)
    code, out, err = cli("predict", run, good, "--top-k", 0, capsys=capsys)
    assert code == 2 and out == "" and "--top-k" in err


def test_gradcam_overlay(run: Path, good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_png = tmp_path / "cam.png"
    np.save(tmp_path / "raw.npy", load(good))
    code, _, _ = cli("predict", run, good, tmp_path / "raw.npy", "--gradcam", out_png, capsys=capsys)
    sheet = np.asarray(Image.open(out_png).convert("RGB")).astype(int)
    assert code == 0 and sheet.shape == (3 * 112 + 26, 224, 3)  # photo, input the model saw, heatmap; caption
    photo, seen, heat = sheet[:112, :112], sheet[112:224, :112], sheet[224:336, :112]
    thumb = np.asarray(Image.open(good).convert("L"))  # 60x40: shown as it is, centred, on white
    assert np.abs(photo[26:86, 36:76, 0] - thumb).max() <= 1 and photo[:20].min() == 255
    expected = np.kron(load(good)[0], np.ones((4, 4), np.uint8))
    assert np.abs(seen[..., 0] - expected).max() == 0 and (heat.std(axis=2) > 10).mean() > 0.3  # gray, then colour
    assert sheet[:112, 112:].min() == 255  # an array has no photo
    logreg = checkpoint_file(tmp_path / "logreg.pt", "logreg")
    code, out, err = cli("predict", logreg, good, "--gradcam", tmp_path / "no.png", capsys=capsys)
    assert code == 2 and out == "" and "convolutional" in err and not (tmp_path / "no.png").exists()


# --- the bad-input corpus --------------------------------------------------------------------------


def test_corpus_is_small_and_complete() -> None:
    assert sum(p.stat().st_size for p in CORPUS.iterdir()) < 50_000
    names = {p.name for p in CORPUS.iterdir()}
    assert {"not_an_image.png", "empty.png", "zero_size.png", "huge.png", "bomb_warning.png", "over_limit.png",
            "truncated.png", "wrong_shape.npy", "future_format.pt", "seven_classes.pt", "wrong_arch.pt"} <= names


@pytest.mark.parametrize("bad", BAD_IMAGES, ids=lambda p: p.name)
def test_each_bad_image_is_one_line_and_the_good_one_still_answers(
    bad: Path, run: Path, good: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with warnings.catch_warnings(record=True) as warned, pytest.raises(ImageError, match=bad.name):
        warnings.simplefilter("always")
        load(bad)
    assert not warned, [str(w.message) for w in warned]
    code, out, err = cli("predict", run, good, bad, capsys=capsys)
    assert code == 2
    assert out.startswith(f"{good}: ") and len(out.splitlines()) == 1
    assert_one_line_error(err, str(bad))


def test_console_script_with_all_bad_files(run: Path, good: Path, tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "fmlab"
    missing = tmp_path / "missing.png"
    argv = [str(script), "predict", str(run), str(good), *map(str, BAD_IMAGES), str(missing), str(good)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout.splitlines() == [line for line in proc.stdout.splitlines() if line.startswith(f"{good}: ")]
    assert len(proc.stdout.splitlines()) == 2
    assert_one_line_error(proc.stderr, *map(str, BAD_IMAGES), str(missing))


def test_product_photos_are_inverted_cropped_and_centred_by_themselves(tmp_path: Path) -> None:
    """Test items made into photos as people take them (dark garment on a light, tinted, non-square JPEG, scaled
    up and off-centre) get the class of the original without --invert, and predict says what it did."""
    from fmlab.data import load as load_data

    try:
        data = load_data(download=False)
    except DataError:
        pytest.skip("Fashion-MNIST not installed")
    rng = torch.Generator().manual_seed(0)
    model = models.build("logreg")
    x = torch.as_tensor(data.x_train[:6000]).float().div(255).sub(NORM[0]).div(NORM[1]).unsqueeze(1)
    y = torch.as_tensor(data.y_train[:6000])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        batch = torch.randint(0, len(x), (256,), generator=rng)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
        opt.step()
    run = checkpoint_file(tmp_path / "logreg.pt", "logreg", model.eval())
    originals = data.x_test[:40]
    paths = []
    for i, item in enumerate(originals):
        paths.append(tmp_path / f"item{i}.jpg")
        garment = np.kron(255 - item, np.ones((4, 4), np.uint8)).astype(np.float64) / 255  # dark on white, 112 px
        photo = np.ones((150 + 7 * i % 40, 200, 3))  # a white, non-square canvas ...
        top, left = 10 + i % 20, 15 + 3 * i % 60  # ... with the garment off-centre
        photo[top : top + 112, left : left + 112] = garment[..., None]
        tint = np.array([1.0, 0.95, 0.85])  # warm light
        Image.fromarray((255 * photo * tint).round().astype(np.uint8)).save(paths[-1], quality=92)
    np.save(tmp_path / "raw.npy", originals)
    raw = predict(run, [tmp_path / "raw.npy"])
    photos = predict(run, paths)
    same = sum(p["label"] == r["label"] for p, r in zip(photos, raw, strict=True))
    assert same >= 36, f"only {same}/40 photos got the class of the raw array"
    assert all(p["preprocessing"].startswith("light background (border median ") for p in photos)
    assert "inverted; cropped 200x" in photos[0]["preprocessing"] and "centred" in photos[0]["preprocessing"]
    assert raw[0]["preprocessing"] == "used as stored"
    forced = predict(run, paths, invert=False)  # what predict did before it read the background
    assert sum(p["label"] == r["label"] for p, r in zip(forced, raw, strict=True)) < same - 10
    restored = np.concatenate([load(p) for p in paths]).astype(int)
    assert np.median(np.abs(restored - originals).mean(axis=(1, 2))) < 10
    assert load(tmp_path / "raw.npy", invert=None).tolist() == originals.tolist()  # arrays are never guessed at


# --- checkpoints that must be refused -------------------------------------------------------------------


class OpensFile:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (self.marker, "w")


class RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def _zip(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _bare_pickle(obj: object) -> bytes:
    """Not a zip: torch.load's legacy path unpickles it as the file's first record."""
    return pickle.dumps(obj, protocol=2)


@pytest.mark.parametrize("gadget", [OpensFile, RunsShell])
@pytest.mark.parametrize("container", [_zip, _bare_pickle])
def test_crafted_pickle_is_refused_without_running(
    gadget: type, container: object, run: Path, good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    payload = {**torch.load(run / RunDir.CHECKPOINT, weights_only=True), "config": gadget(marker)}
    evil = tmp_path / "evil.pt"
    evil.write_bytes(container(payload))  # type: ignore[operator]
    with pytest.raises(CheckpointError, match="refused"):
        checkpoint.read(evil, Predictor.KEYS)
    code, out, err = cli("predict", evil, good, capsys=capsys)
    assert code == 2 and out == "" and not marker.exists()
    assert_one_line_error(err, str(evil))
    with contextlib.suppress(RuntimeError):  # the control: loading it unsafely does run the gadget
        torch.load(evil, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("bad", BAD_CHECKPOINTS, ids=lambda p: p.name)
def test_corpus_checkpoints_are_refused(bad: Path, good: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(CheckpointError):
        open_predictor(bad)
    code, out, err = cli("predict", bad, good, capsys=capsys)
    assert code == 2 and out == ""
    assert_one_line_error(err, str(bad))


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"format": checkpoint.FORMAT_VERSION + 1}, "newer"), ({"format": 1}, "older fmlab"),
     ({"num_classes": 7}, "7 classes"), ({"spec": SPECS["logreg"]}, "do not fit"),
     ({"spec": {**SPECS["logreg"], "model": "no-such-model"}}, "no-such-model"),
     ({"spec": {**SPECS["lenet5"], "model_args": [6, 16]}}, "model_args"),
     ({"spec": {**SPECS["lenet5"], "threads": None}}, "not a resolved spec"),
     ({"norm": {"mean": 0.0, "std": 0.0}}, "normalisation"), ({"norm": [0.2, 0.3]}, "normalisation")],
)
def test_incompatible_checkpoints(changes: dict, message: str, good: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    bad = checkpoint_file(tmp_path / "bad.pt", "lenet5", **changes)
    code, out, err = cli("predict", bad, good, capsys=capsys)
    assert code == 2 and out == "" and message in err
    assert_one_line_error(err)


@pytest.mark.parametrize("cut", [0, 10, 0.5, -20])
def test_truncated_checkpoints(cut: float, run: Path, tmp_path: Path) -> None:
    whole = (run / RunDir.CHECKPOINT).read_bytes()
    end = int(len(whole) * cut) if isinstance(cut, float) else cut
    (tmp_path / "cut.pt").write_bytes(whole[:end])
    with pytest.raises(CheckpointError):
        checkpoint.read(tmp_path / "cut.pt", Predictor.KEYS)


def test_missing_checkpoint_and_empty_bytes(tmp_path: Path, good: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli("predict", tmp_path, good, capsys=capsys)
    assert code == 2 and "not an fmlab run folder" in err
    with pytest.raises(ImageError, match="empty"):
        decode(b"", "nothing")
