"""`fmlab data info|verify`: output on success, one line and exit 2 on every failure."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import assert_one_line_error, run_cli
from fmlab.data import fashion_mnist as fm
from fmlab.data.fashion_mnist import CLASS_NAMES, FILES

FMLAB = Path(sys.executable).parent / "fmlab"


@pytest.fixture
def synthetic_trusted(make_trusted):
    """A synthetic set big enough for the default 5,000 validation split, its checksums recorded."""
    return make_trusted(train_per_class=510, test_per_class=2)


@pytest.fixture
def real_copy(real_data, tmp_path) -> Path:
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in FILES.values():
        shutil.copy(real_data.source.path / name, folder / name)
    return folder


def test_info_json_on_synthetic_folder(capsys, synthetic_trusted):
    code, out, err = run_cli(capsys, "data", "info", "--json", "--data-dir", str(synthetic_trusted.path))
    assert (code, err) == (0, "")
    info = json.loads(out)
    assert info["path"] == str(synthetic_trusted.path) and info["origin"] == "--data-dir"
    assert info["counts"] == {"train": 100, "val": 5000, "test": 20}
    assert info["per_class"]["train"] == dict.fromkeys(CLASS_NAMES, 10)
    assert info["per_class"]["val"] == dict.fromkeys(CLASS_NAMES, 500)
    assert info["per_class"]["test"] == dict.fromkeys(CLASS_NAMES, 2)
    assert {name: f["sha256"] for name, f in info["files"].items()} == synthetic_trusted.checksums
    assert 0.45 < info["pixel_mean"] < 0.55 and 0.25 < info["pixel_std"] < 0.33  # uniform noise


def test_info_text_and_verify_on_synthetic_folder(capsys, synthetic_trusted, monkeypatch):
    monkeypatch.setenv("FMLAB_DATA_DIR", str(synthetic_trusted.path))
    code, out, err = run_cli(capsys, "data", "info")
    assert (code, err) == (0, "")
    assert f"found in {synthetic_trusted.path} ($FMLAB_DATA_DIR)" in out
    assert "train 100, val 5,000, test 20" in out
    assert all(name in out for name in CLASS_NAMES)
    code, out, err = run_cli(capsys, "data", "verify")
    assert (code, err) == (0, "")
    assert out.startswith("ok: ") and "4 files verified" in out


def test_info_rejects_files_with_other_checksums(capsys, synthetic):
    code, _, err = run_cli(capsys, "data", "info", "--data-dir", str(synthetic.path))
    assert_one_line_error(code, err, "checksum mismatch", str(synthetic.path))


@pytest.mark.integration
def test_verify_truncated_real_file(capsys, real_copy):
    path = real_copy / FILES["train_labels"]
    path.write_bytes(path.read_bytes()[:-500])
    code, out, err = run_cli(capsys, "data", "verify", "--data-dir", str(real_copy))
    assert out == ""
    assert_one_line_error(code, err, str(path))


@pytest.mark.integration
def test_verify_real_file_with_changed_content(capsys, real_copy):
    path = real_copy / FILES["test_labels"]
    content = bytearray(gzip.decompress(path.read_bytes()))
    content[100] = (content[100] + 1) % 10  # still a valid label file
    path.write_bytes(gzip.compress(bytes(content)))
    code, _, err = run_cli(capsys, "data", "verify", "--data-dir", str(real_copy))
    assert_one_line_error(code, err, "checksum mismatch", str(path))


@pytest.mark.integration
def test_verify_truncated_real_file_subprocess(real_copy):
    path = real_copy / FILES["test_images"]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    proc = subprocess.run(
        [str(FMLAB), "data", "verify", "--data-dir", str(real_copy)],
        capture_output=True, text=True, env=dict(os.environ), timeout=120,
    )
    assert proc.stdout == ""
    assert_one_line_error(proc.returncode, proc.stderr, str(path))


@pytest.mark.integration
def test_verify_real_copy_succeeds_subprocess(real_copy):
    proc = subprocess.run(
        [str(FMLAB), "data", "verify", "--data-dir", str(real_copy)],
        capture_output=True, text=True, env=dict(os.environ), timeout=120,
    )
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == f"ok: {real_copy} (--data-dir), 4 files verified\n"


@pytest.mark.parametrize(
    "argv",
    [
        ("data", "info", "--bogus"),
        ("data", "verify", "--data-dir"),  # option without its value
        ("data", "frobnicate"),
        ("nosuchcommand",),
    ],
)
def test_usage_errors_are_one_line(capsys, argv):
    code, out, err = run_cli(capsys, *argv)
    assert out == ""
    assert_one_line_error(code, err)


def test_unknown_option_subprocess():
    proc = subprocess.run([str(FMLAB), "data", "info", "--bogus"], capture_output=True, text=True, timeout=120)
    assert proc.stdout == ""
    assert_one_line_error(proc.returncode, proc.stderr, "--bogus")


@pytest.mark.parametrize("command", ["info", "verify"])
def test_bad_data_dir(capsys, tmp_path, command):
    missing = tmp_path / "no-such-folder"
    code, out, err = run_cli(capsys, "data", command, "--data-dir", str(missing))
    assert out == ""
    assert_one_line_error(code, err, str(missing), "missing")


def test_bad_env_data_dir(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("FMLAB_DATA_DIR", str(tmp_path))
    code, _, err = run_cli(capsys, "data", "verify")
    assert_one_line_error(code, err, "$FMLAB_DATA_DIR", str(tmp_path))


def test_no_data_anywhere_and_offline(capsys, monkeypatch):
    monkeypatch.setattr(fm, "SYSTEM_DIRS", ())
    code, _, err = run_cli(capsys, "data", "verify")
    assert_one_line_error(code, err, "apt-get install dataset-fashion-mnist", "--data-dir", str(fm.cache_dir()))


def test_folder_too_small_for_the_default_split(capsys, make_trusted):
    synthetic = make_trusted()
    code, _, err = run_cli(capsys, "data", "info", "--data-dir", str(synthetic.path))
    assert_one_line_error(code, err, "val_size")


def test_version_is_the_installed_packages(capsys):
    from importlib.metadata import version

    code, out, err = run_cli(capsys, "--version")
    assert code == 0 and out == f"fmlab {version('fmlab')}\n" and err == ""
