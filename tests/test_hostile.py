"""Hostile and damaged input: every case is refused with one line and exit status 2, nothing is written
outside the scratch folder, nothing is deleted, and no small file exhausts memory.

The corpus (tests/hostile/, written by make_corpus.py) holds the hostile study files and checkpoints;
what cannot be committed small (devices, FIFOs, sparse files, a gzip bomb, damaged run folders) is
made here. Memory cases run as subprocesses under an address-space limit, so a regression fails the
test instead of exhausting the machine.
"""

from __future__ import annotations

import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_helpers import assert_one_line_error, run_cli
from fmlab.runs import RunDir, StudyDir, resolve
from fmlab.training import checkpoint
from fmlab.training.fit import fit
from synthetic import trained_run

CORPUS = Path(__file__).parent / "hostile"
MEMORY_LIMIT = 3 << 30  # address space for a subprocess: fmlab with torch needs about 1 GiB of it


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file() or p.is_dir()}


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """tmp_path holds the inputs (a finished run, a picture, a user's folder that must survive) and an empty
    scratch folder, the working directory; a refused command changes nothing under tmp_path."""
    from PIL import Image

    inputs, scratch, sentinel = tmp_path / "inputs", tmp_path / "scratch", tmp_path / "user"
    shutil.copytree(_finished_run(), inputs / "run")
    picture = np.zeros((40, 30), np.uint8)
    picture[5:35, 5:25] = 200
    Image.fromarray(picture).save(inputs / "shirt.png")
    (sentinel / "baseline" / "seed0").mkdir(parents=True)
    (sentinel / "baseline" / "seed0" / "thesis.txt").write_text("a user's file")
    scratch.mkdir()
    monkeypatch.chdir(scratch)
    return {"root": tmp_path, "inputs": inputs, "scratch": scratch, "sentinel": sentinel,
            "run": inputs / "run", "png": inputs / "shirt.png"}


_RUN_CACHE: dict[str, Path] = {}


def _finished_run() -> Path:
    if "run" not in _RUN_CACHE:
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="fmlab-hostile-")) / "run"
        trained_run(folder, "simple-cnn")
        _RUN_CACHE["run"] = folder
    return _RUN_CACHE["run"]


def refused(capsys, world, *argv: str, needle: str) -> str:
    """The command exits 2 with one line holding `needle`, and nothing under the world changed; returns the line."""
    before = snapshot(world["root"])
    argv = tuple(a.format(**{k: str(v) for k, v in world.items()}) for a in argv)
    code, out, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, needle)
    assert snapshot(world["root"]) == before, "a refused command wrote or deleted something"
    assert out == ""
    return err


# ---- study files: names that are paths, values that are absurd -------------------------------------------

STUDY_CASES = [
    ("dotdot_family.toml", "families.'..'.variants: variant name '../../../../escape_variant' must be letters"),
    ("absolute_family.toml", "must be letters, digits"),
    ("slash_family.toml", "family name 'a/b'"),
    ("empty_variant_name.toml", "variant name ''"),
    ("variant_model.toml", "'model' cannot be set here"),
    ("weight_decay_inf.toml", "defaults: weight_decay: Input should be a finite number"),
    ("l2_1e308.toml", "defaults: l2: Input should be less than or equal to 100"),
    ("epochs_true.toml", "defaults: epochs: Input should be a valid integer"),
    ("epochs_string.toml", "defaults: epochs: Input should be a valid integer"),
    ("evaluate_unknown.toml", "unknown key 'evaluate.foo'"),
    ("evaluate_negative_timing.toml", "evaluate.timing_s: Input should be greater than 0"),
    ("model_args_number.toml", "defaults: model_args must be a table"),
    ("seed_2_64.toml", "seeds must be between 0 and 2**32 - 1"),
    ("negative_seed.toml", "seeds must be between 0 and 2**32 - 1"),
    ("huge_channels.toml", "over fmlab's limit of 50,000,000"),
    ("tune_bad_grid.toml", "tune.grid: grid lr=-1.0: lr: Input should be greater than 0"),
    ("tune_unknown.toml", "unknown key 'tune.gird'"),
]


@pytest.mark.parametrize("name,needle", STUDY_CASES, ids=[c[0] for c in STUDY_CASES])
def test_hostile_study_files_are_refused_before_anything_is_written(capsys, world, name, needle):
    study = world["scratch"] / name
    study.write_text((CORPUS / name).read_text().replace("{sentinel}", str(world["sentinel"])))
    refused(capsys, world, "study", "run", str(study), "--out", "{scratch}/out", needle=needle)
    assert not Path("/escape_variant").exists()
    refused(capsys, world, "study", "run", str(study), needle=needle)  # without --out: runs/<study name>


def test_a_study_name_cannot_leave_the_runs_folder(capsys, world):
    study = world["scratch"] / "s.toml"
    shutil.copy(CORPUS / "escaping_study_name.toml", study)
    refused(capsys, world, "study", "run", str(study), needle="study name '../../escape_study'")


def test_an_unknown_executor_leaves_nothing_behind(capsys, world):
    study = world["scratch"] / "s.toml"
    study.write_text('[families.lin]\nmodel = "logreg"\n')
    refused(capsys, world, "study", "run", str(study), "--out", "{scratch}/out", "--executor", "bogus",
            needle="unknown executor 'bogus'")


# ---- checkpoints ------------------------------------------------------------------------------------------

CHECKPOINT_CASES = [
    ("huge_model_args.pt", "40,159,200,010 parameters, over fmlab's limit"),
    ("model_args_list.pt", "model_args: Input should be a valid dictionary"),
    ("model_args_string.pt", "model_args: Input should be a valid dictionary"),
    ("norm_list.pt", "checkpoint normalisation [0.2, 0.3] is invalid"),
    ("norm_string.pt", "checkpoint normalisation 'standard' is invalid"),
    ("norm_std_zero.pt", "is invalid (needs a finite mean and std > 0)"),
    ("norm_nan.pt", "is invalid (needs a finite mean and std > 0)"),
    ("norm_missing.pt", "checkpoint normalisation None is invalid"),
    ("nan_weights.pt", "weights are not finite"),
    ("wrong_shape.pt", "size mismatch for fc.weight: copying a param with shape torch.Size([10, 4])"),
    ("unknown_key.pt", "unexpected entry 'extra'"),
    ("png_renamed.pt", "not a PyTorch checkpoint, or a damaged one (it looks like a PNG image)"),
    ("text_renamed.pt", "(it looks like text)"),
    ("random_renamed.pt", "(unknown binary data)"),
]


@pytest.mark.parametrize("name,needle", CHECKPOINT_CASES, ids=[c[0] for c in CHECKPOINT_CASES])
def test_hostile_checkpoints_are_refused_by_every_command(capsys, world, name, needle):
    bad = CORPUS / name
    assert str(bad) in refused(capsys, world, "predict", str(bad), "{png}", needle=needle)  # names the file
    refused(capsys, world, "export", str(bad), "--onnx", "{scratch}/m.onnx", needle=needle)
    run = world["inputs"] / "damaged"
    shutil.copytree(world["run"], run)
    shutil.copy(bad, run / RunDir.CHECKPOINT)
    refused(capsys, world, "evaluate", str(run), "--out", "{scratch}/eval", needle=needle)


# ---- outputs never replace inputs ---------------------------------------------------------------------------

OUTPUT_CASES = [
    (("export", "{run}", "--onnx", "{run}/" + RunDir.CHECKPOINT), "belongs to the run in"),
    (("predict", "{run}", "{png}", "--gradcam", "{run}/" + RunDir.CHECKPOINT), "belongs to the run in"),
    (("predict", "{run}", "{png}", "--gradcam", "{png}"), "is one of this command's inputs"),
    (("evaluate", "{run}", "--out", "{run}"), "is a run folder"),
    (("export", "{run}", "--onnx", "{scratch}"), "is a folder; give the path of a file"),
    (("predict", "{run}", "{png}", "--gradcam", "{scratch}"), "is a folder; give the path of a file"),
    (("train", "--model", "logreg", "--out", "{png}"), "exists and is not a folder"),
    (("evaluate", "{run}", "--out", "{png}"), "is a file; evaluation outputs go to a folder"),
    (("study", "run", "{scratch}/../inputs/study.toml", "--out", "{png}"), "cannot write there"),
    (("train", "--model", "logreg", "--out", "/proc/fmlab-out"), "cannot write there"),
]


@pytest.mark.parametrize("argv,needle", OUTPUT_CASES, ids=[" ".join(c[0][:2]) + f" {i}" for i, c in
                                                           enumerate(OUTPUT_CASES)])
def test_outputs_never_replace_inputs_and_bad_places_are_one_line(capsys, world, real_data, argv, needle):
    (world["inputs"] / "study.toml").write_text('[families.lin]\nmodel = "logreg"\n')
    refused(capsys, world, *argv, needle=needle)


def test_an_existing_checkpoint_is_never_an_export_target(capsys, world):
    other = world["inputs"] / "kept.pt"
    shutil.copy(world["run"] / RunDir.CHECKPOINT, other)
    refused(capsys, world, "export", "{run}", "--onnx", str(other), needle="is a checkpoint")


def test_a_full_disk_is_one_line_and_leaves_no_partial_file(capsys, world, monkeypatch, make_trusted):
    import errno

    syn = make_trusted(train_per_class=10, test_per_class=2)
    real_save = torch.save

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    code, _, err = run_cli(capsys, "train", "--model", "logreg", "--epochs", "1", "--val-size", "20",
                           "--data-dir", str(syn.path), "--out", "run")
    monkeypatch.setattr(torch, "save", real_save)
    errors = [line for line in err.splitlines() if not line.startswith("epoch ")]  # progress lines go to stderr too
    assert code == 2 and "Traceback" not in err
    assert errors == [f"error: run/{RunDir.STATE}: cannot write there (No space left on device); choose another "
                      "output path"]
    assert not [p for p in (world["scratch"] / "run").iterdir() if p.name.startswith(".")]  # no temp files


# ---- damaged run and study folders ---------------------------------------------------------------------------

def _unfinished(folder: Path, data_dir: Path) -> RunDir:
    from fmlab.data import load
    from fmlab.errors import Interrupted

    spec = resolve([("t", {"model": "logreg", "epochs": 3, "val_size": 50, "batch_size": 32})])

    def stop(epoch, record):
        raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        fit(spec, folder, data=load(data_dir), device="cpu", progress=False, callbacks=[stop])
    return RunDir(folder)


@pytest.mark.parametrize("damage,needle", [
    ("malformed_config", "unreadable"),
    ("foreign_config", "no run key"),
    ("state_without_learner", "is damaged (no learner)"),
    ("state_of_another_run", "belongs to another run"),
])
def test_resuming_a_damaged_run_is_one_line(capsys, world, damage, needle, make_trusted):
    syn = make_trusted(train_per_class=20, test_per_class=10)
    run = _unfinished(world["inputs"] / "cut", syn.path)
    key = run.read_spec()[1]
    state = checkpoint.read(run.path / RunDir.STATE, ("format", "state_dict", "key", *RunDir.STATE_KEYS))
    if damage == "malformed_config":
        (run.path / RunDir.CONFIG).write_text("{not json")
    elif damage == "foreign_config":
        (run.path / RunDir.CONFIG).write_text(json.dumps({"model": "lenet5", "lr": 0.1}))
    elif damage == "state_without_learner":
        checkpoint.save(run.path / RunDir.STATE, {k: v for k, v in state.items() if k != "learner"})
    else:
        checkpoint.save(run.path / RunDir.STATE, {**state, "key": "0" * 16})
    assert key
    refused(capsys, world, "train", "--out", str(run.path), "--resume", "--data-dir", str(syn.path), needle=needle)


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory) -> Path:
    """A finished two-family study on a synthetic set whose checksums are accepted for this module."""
    from conftest import write_synthetic
    from fmlab.data import fashion_mnist
    from fmlab.study.run import run_study

    root = tmp_path_factory.mktemp("study")
    syn = write_synthetic(root / "data", 10, 3)
    saved = dict(fashion_mnist.CHECKSUMS)
    fashion_mnist.CHECKSUMS.update(syn.checksums)
    (root / "s.toml").write_text('seeds = [0]\ndevice = "cpu"\n[defaults]\nepochs = 1\nval_size = 20\n'
                                 '[families.lin]\nmodel = "logreg"\n')
    try:
        run_study(root / "s.toml", root / "out", data_dir=str(syn.path), log=lambda _: None)
    finally:
        fashion_mnist.CHECKSUMS.clear()
        fashion_mnist.CHECKSUMS.update(saved)
    summary = (root / "out" / StudyDir.SUMMARY).read_text()
    assert "NaN" not in summary and json.loads(summary)["rows"][0]["accuracy"]["ci_low"] is None  # one seed
    return root / "out"


@pytest.mark.parametrize("damage,needle", [
    ("empty_summary", "the study's results are incomplete or damaged"),
    ("study_list", "expected a JSON object"),
    ("eval_deleted", "missing"),
])
def test_reporting_a_damaged_study_is_one_line(capsys, world, finished_study, damage, needle):
    study = world["inputs"] / "study"
    shutil.copytree(finished_study, study)
    layout = StudyDir(study)
    if damage == "empty_summary":
        (study / StudyDir.SUMMARY).write_text("{}")
    elif damage == "study_list":
        (study / StudyDir.STUDY).write_text("[]")
    else:
        shutil.rmtree(layout.comparison.run("lin").path)
    refused(capsys, world, "study", "report", str(study), needle=needle)


# ---- inputs: devices, pipes, sparse files, bombs, absurd options ------------------------------------------------

def test_devices_pipes_and_oversized_inputs_are_refused(capsys, world, monkeypatch):
    fifo = world["inputs"] / "pipe.png"
    os.mkfifo(fifo)
    sparse = world["inputs"] / "sparse.png"
    with sparse.open("wb") as fh:
        fh.truncate(3 << 30)  # 3 GB that take no disk
    refused(capsys, world, "predict", "{run}", "/dev/zero", needle="/dev/zero: not a regular file")
    refused(capsys, world, "predict", "{run}", str(fifo), needle="pipe.png: not a regular file")
    refused(capsys, world, "predict", "{run}", str(sparse), needle="over the 64 MiB limit for input files; refused "
                                                                   "(raise it with FMLAB_MAX_INPUT_MB")
    np.save(world["inputs"] / "big.npy", np.zeros((3000, 28, 28), np.uint8))  # 2.2 MiB
    monkeypatch.setenv("FMLAB_MAX_INPUT_MB", "1")
    refused(capsys, world, "predict", "{run}", "{inputs}/big.npy", needle="over the 1 MiB limit")


def test_a_gzip_bomb_data_file_is_refused_before_it_inflates(capsys, world, real_data):
    folder = world["inputs"] / "data"
    shutil.copytree(real_data.source.path, folder)
    with gzip.open(folder / "train-images-idx3-ubyte.gz", "wb", compresslevel=9) as fh:
        for _ in range(50):
            fh.write(bytes(4 << 20))  # 200 MiB of zeros in a file of about 200 KiB
    refused(capsys, world, "data", "verify", "--data-dir", str(folder),
            needle="decompresses to more than 47,040,016 bytes")


def test_absurd_search_options_are_one_line(capsys, world):
    notes = world["inputs"] / "notes.txt"
    notes.write_text("not a database\n" * 100)
    refused(capsys, world, "tune", "grid", "--model", "logreg", "--param", "lr=1e-3", "--cv", "100000",
            needle="cv must be 'holdout' or a number of folds from 2 to 100")
    refused(capsys, world, "tune", "optuna", "--model", "logreg", "--trials", "1", "--storage",
            f"sqlite:///{world['inputs']}/missing/optuna.db", needle="does not exist; create it")


def test_an_optuna_storage_that_is_not_a_database_is_one_line(capsys, world, real_data):
    notes = world["inputs"] / "notes.txt"
    notes.write_text("not a database\n" * 100)
    refused(capsys, world, "tune", "optuna", "--model", "logreg", "--trials", "1", "--storage",
            f"sqlite:///{notes}", needle="is not a usable database")


def test_a_data_dir_that_is_a_file_says_so(capsys, world, monkeypatch):
    monkeypatch.setenv("FMLAB_DATA_DIR", str(world["png"]))
    refused(capsys, world, "data", "verify", needle="is a file, not a folder")


# ---- memory: small files must not allocate much, checked under a limit ----------------------------------------

def _limited(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    return subprocess.run([sys.executable, "-m", "fmlab", *argv], preexec_fn=limit, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


def test_memory_bombs_fail_fast_under_a_memory_limit(world):
    sparse = world["inputs"] / "sparse.png"
    with sparse.open("wb") as fh:
        fh.truncate(3 << 30)
    cases = [
        (["predict", str(world["run"]), "/dev/zero"], None, "not a regular file"),
        (["predict", str(world["run"]), str(sparse)], None, "over the 64 MiB limit"),
        (["predict", str(CORPUS / "huge_model_args.pt"), str(world["png"])], None, "over fmlab's limit"),
        (["predict", str(CORPUS / "deflate_bomb.pt"), str(world["png"])], {"FMLAB_MAX_CHECKPOINT_MB": "16"},
         "unpacks to 32 MiB, over the 16 MiB limit for checkpoints"),
        (["train", "--model", "cnn", "--arg", "channels=[1000000000,2,3]", "--out", str(world["scratch"] / "x")],
         None, "over fmlab's limit"),
    ]
    for argv, env, needle in cases:
        proc = _limited(argv, env)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and needle in proc.stderr, (argv, proc.stderr)
    assert not (world["scratch"] / "x").exists()


def test_the_memory_limit_is_real():
    """The limit above does stop an allocation of the size the bombs would make (so the cases can fail)."""
    proc = subprocess.run([sys.executable, "-c", "import numpy; numpy.ones(1 << 29)"],
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT)),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "MemoryError" in proc.stderr


# ---- signals: SIGTERM and SIGHUP stop like Ctrl+C ---------------------------------------------------------------

@pytest.mark.integration
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_save_state_say_so_and_exit_128_plus_the_signal(tmp_path, real_data, sig):
    import signal
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "fmlab", "train", "--model", "lenet5", "--epochs", "30", "--train-size", "5000",
           "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / RunDir.STATE).exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=120)
    number = getattr(signal, sig).value
    assert proc.returncode == 128 + number, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"interrupted ({sig}) during epoch") and f"fmlab train --resume --out {out}" in last
    assert RunDir(out).has_state()


@pytest.mark.integration
def test_an_interrupted_study_names_the_study_command_to_continue(tmp_path, real_data):
    import signal
    import time

    study, out = tmp_path / "s.toml", tmp_path / "out"
    study.write_text('seeds = [0]\n[defaults]\nepochs = 20\ntrain_size = 3000\n[families.le]\nmodel = "lenet5"\n')
    proc = subprocess.Popen([sys.executable, "-m", "fmlab", "study", "run", str(study), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = StudyDir(out).trial("le", "baseline", 0).path / RunDir.STATE
    deadline = time.monotonic() + 120
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == (f"interrupted (SIGTERM); finished trials and saved epochs are kept, "
                                            f"continue with: fmlab study run {study} --out {out}")


# ---- words ---------------------------------------------------------------------------------------------------------

def test_spreadsheet_formulas_are_neutralised_in_csv():
    from fmlab.io import csv_cell

    assert [csv_cell(v) for v in ("=cmd()", "+1", "-2", "@SUM(A1)", "plain", 3.5)] == [
        "'=cmd()", "'+1", "'-2", "'@SUM(A1)", "plain", 3.5]


def test_a_file_name_cannot_fake_a_result_line(capsys, world):
    sneaky = world["inputs"] / "a.png\nb.png: Ankle boot 100.0%"
    shutil.copy(world["png"], sneaky)
    code, out, err = run_cli(capsys, "predict", str(world["run"]), str(sneaky))
    assert code == 0, err
    assert len(out.splitlines()) == 1 and "\\n" in out


def test_typer_surface_the_cli_relies_on():
    """fmlab.cli uses typer.main.get_command, typer.exceptions and the name of typer's no-arguments help
    exception; this fails (instead of the CLI breaking silently) if a typer release moves them."""
    import typer
    import typer.main
    from typer.exceptions import Abort, Exit, TyperException

    from fmlab.cli import app

    command = typer.main.get_command(app)
    with pytest.raises(TyperException) as info:
        command.main(args=[], prog_name="fmlab", standalone_mode=False)
    assert type(info.value).__name__ == "NoArgsIsHelpError" and info.value.ctx is not None
    with pytest.raises(TyperException) as info:
        command.main(args=["--nope"], prog_name="fmlab", standalone_mode=False)
    assert "--nope" in info.value.format_message()
    assert issubclass(Abort, BaseException) and hasattr(Exit(3), "exit_code")


def test_a_trial_folder_linked_outside_the_study_is_refused(tmp_path, world):
    from fmlab.errors import OutputError

    layout = StudyDir(tmp_path / "study")
    (layout.path / StudyDir.TRIALS).mkdir(parents=True)
    (layout.path / StudyDir.TRIALS / "lin").symlink_to(world["sentinel"])
    with pytest.raises(OutputError, match="leads outside the study folder"):
        layout.trial("lin", "baseline", 0)
    assert (world["sentinel"] / "baseline" / "seed0" / "thesis.txt").read_text() == "a user's file"
