"""Where the data comes from: lookup order, and the verified download into the cache."""

from __future__ import annotations

import gzip
import http.server
import shutil
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from fmlab.data import fashion_mnist as fm
from fmlab.data import load, locate
from fmlab.data.fashion_mnist import FILES, cache_dir
from fmlab.errors import ChecksumError, DataNotFoundError, GzipError


@pytest.fixture
def places(tmp_path, monkeypatch, make_synthetic):
    """The same synthetic set in an explicit folder, $FMLAB_DATA_DIR, the cache and two system folders."""
    folders = {
        "explicit": tmp_path / "explicit",
        "env": tmp_path / "env",
        "cache": cache_dir(),
        "system1": tmp_path / "system1",
        "system2": tmp_path / "system2",
    }
    sets = {key: make_synthetic(folder) for key, folder in folders.items()}
    monkeypatch.setattr(fm, "SYSTEM_DIRS", (folders["system1"], folders["system2"]))
    monkeypatch.setenv("FMLAB_DATA_DIR", str(folders["env"]))
    return folders, sets["explicit"].checksums


def test_lookup_order(places, monkeypatch):
    folders, checksums = places
    expected = [
        ("explicit", "--data-dir"),
        ("env", "$FMLAB_DATA_DIR"),
        ("cache", "cache"),
        ("system1", "system"),
        ("system2", "system"),
    ]
    for key, origin in expected:
        given = folders["explicit"] if key == "explicit" else None
        source = locate(given, download=False, checksums=checksums)
        assert (source.path, source.origin) == (folders[key], origin)
        data = load(given, download=False, checksums=checksums)
        assert data.source == source and len(data.x_train) == 60
        # take this place away: the next one in line must answer
        if key == "env":
            monkeypatch.delenv("FMLAB_DATA_DIR")
        elif key != "explicit":
            shutil.rmtree(folders[key])
    with pytest.raises(DataNotFoundError, match="not found"):
        locate(download=False)


def test_env_var_beats_system_folder(places):
    folders, _ = places
    shutil.rmtree(folders["cache"])
    assert locate(download=False).origin == "$FMLAB_DATA_DIR"


def test_explicit_dir_accepts_str_and_tilde(places, monkeypatch, tmp_path):
    folders, _ = places
    monkeypatch.setenv("HOME", str(tmp_path))
    assert locate(str(folders["explicit"])).path == folders["explicit"]
    assert locate("~/explicit").path == folders["explicit"]


def test_incomplete_cache_is_skipped(places, monkeypatch):
    folders, _ = places
    monkeypatch.delenv("FMLAB_DATA_DIR")
    (folders["cache"] / FILES["test_labels"]).unlink()
    source = locate(download=False)
    assert (source.path, source.origin) == (folders["system1"], "system")


@pytest.mark.parametrize("origin", ["--data-dir", "$FMLAB_DATA_DIR"])
def test_missing_file_in_given_dir_is_an_error_not_a_fallback(places, monkeypatch, origin):
    folders, _ = places
    folder = folders["explicit"] if origin == "--data-dir" else folders["env"]
    (folder / FILES["train_labels"]).unlink()
    given = folder if origin == "--data-dir" else None
    with pytest.raises(DataNotFoundError) as info:
        locate(given)
    message = str(info.value)
    assert origin in message and str(folder) in message and FILES["train_labels"] in message
    assert FILES["train_images"] not in message  # only the missing one is named


def test_nonexistent_given_dir(tmp_path):
    with pytest.raises(DataNotFoundError, match="missing train-images"):
        locate(tmp_path / "nowhere")


# Download from a mirror: a local HTTP server on 127.0.0.1 serving synthetic files.


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture
def mirror(tmp_path, make_synthetic, monkeypatch):
    """(url, served set): an HTTP mirror in a thread, shut down after the test; no system folders."""
    monkeypatch.setattr(fm, "SYSTEM_DIRS", ())
    served = make_synthetic(tmp_path / "served", seed=7)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(served.path)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


ATTRS = {"train_images": "x_train", "train_labels": "y_train", "test_images": "x_test", "test_labels": "y_test"}


def _cache_entries() -> list[str]:
    folder = cache_dir()
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_into_cache(mirror, monkeypatch):
    url, served = mirror
    monkeypatch.setenv("FMLAB_MIRROR", url)
    data = load(checksums=served.checksums)
    assert data.source.origin == "download" and data.source.path == cache_dir()
    assert _cache_entries() == sorted(FILES.values())  # the four files, no temp files
    for key, name in FILES.items():
        assert (cache_dir() / name).read_bytes() == (served.path / name).read_bytes()
        np.testing.assert_array_equal(getattr(data, ATTRS[key]), served.arrays[key])
    # the next lookup finds the cache, with no mirror needed
    monkeypatch.setenv("FMLAB_MIRROR", "http://127.0.0.1:9/")
    assert locate(checksums=served.checksums).origin == "cache"


@pytest.mark.parametrize("trailing_slash", [True, False])
def test_mirror_argument_with_or_without_slash(mirror, trailing_slash):
    url, served = mirror
    source = locate(mirror=url if trailing_slash else url.rstrip("/"), checksums=served.checksums)
    assert source.origin == "download"
    assert _cache_entries() == sorted(FILES.values())


def _corrupt(path: Path, how: str) -> None:
    if how == "content":  # valid gzip, different content: only the checksum can tell
        content = bytearray(gzip.decompress(path.read_bytes()))
        content[-1] ^= 0x01
        path.write_bytes(gzip.compress(bytes(content)))
    else:  # a download cut short
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) // 2])


@pytest.mark.parametrize("key", ["train_images", "test_labels"])  # first and last file fetched
@pytest.mark.parametrize(("how", "error"), [("content", ChecksumError), ("cut", GzipError)])
def test_corrupt_download_is_rejected_and_leaves_nothing(mirror, key, how, error):
    url, served = mirror
    _corrupt(served.path / FILES[key], how)
    with pytest.raises(error) as info:
        locate(mirror=url, checksums=served.checksums)
    message = str(info.value)
    assert "rejected, nothing kept" in message and FILES[key] in message and "\n" not in message
    assert _cache_entries() == []  # no partial, temp or already-verified files left behind


def test_missing_file_on_mirror(mirror):
    url, served = mirror
    (served.path / FILES["test_images"]).unlink()
    with pytest.raises(DataNotFoundError, match=f"HTTP 404 .* for {url}{FILES['test_images']}"):
        locate(mirror=url, checksums=served.checksums)
    assert _cache_entries() == []


def test_offline_lists_the_three_ways(monkeypatch):
    monkeypatch.setattr(fm, "SYSTEM_DIRS", ())
    with pytest.raises(DataNotFoundError) as info:
        load()  # FMLAB_MIRROR is the closed port 127.0.0.1:9
    message = str(info.value)
    assert "\n" not in message
    assert "127.0.0.1:9" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "--data-dir" in message and "$FMLAB_DATA_DIR" in message
    assert str(cache_dir()) in message
    assert _cache_entries() == []


@pytest.mark.parametrize("bad", ["not a url", "ftp://[::1"])
def test_malformed_mirror_is_a_clear_error(monkeypatch, bad):
    monkeypatch.setattr(fm, "SYSTEM_DIRS", ())
    with pytest.raises(DataNotFoundError, match="apt-get install"):
        locate(mirror=bad)


def test_no_download_when_disabled(monkeypatch):
    monkeypatch.setattr(fm, "SYSTEM_DIRS", ())
    with pytest.raises(DataNotFoundError, match="--data-dir"):
        locate(download=False)
    assert not cache_dir().exists()

