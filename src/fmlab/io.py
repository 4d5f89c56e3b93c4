"""Atomic file writes (a crash never leaves a half-written artifact; files follow the umask), and the size
limits on what fmlab reads."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from fmlab.errors import OutputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def cannot_write(path: str | os.PathLike, exc: OSError) -> OutputError:
    return OutputError(f"{path}: cannot write there ({exc.strerror or exc}); choose another output path")


def make_dir(path: str | os.PathLike) -> Path:
    """Create a folder (and its parents) or say in one line why it cannot be."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise cannot_write(path, exc) from None
    return path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto `path` on success. A write that fails
    (read-only place, full disk, a folder in the way) is an OutputError and leaves nothing behind."""
    path = Path(path)
    make_dir(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise cannot_write(path, exc) from None
    # mkstemp creates 0600; the finished file gets the mode any other program's output would get
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise cannot_write(path, exc) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write(path: str | os.PathLike, write: Callable[[IO], Any], mode: str = "w") -> None:
    """Open a temporary file, let `write` fill it, then rename it onto `path`."""
    with atomic_path(path) as tmp, open(tmp, mode) as fh:
        write(fh)


def write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Strict JSON: a NaN or infinity is a bug to fix (write None and say why), not a file to write."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def csv_cell(value: Any) -> Any:
    """A CSV value a spreadsheet will not run: text starting with =, +, -, @ (or a tab or return) is quoted
    with a leading apostrophe, as spreadsheets expect; numbers pass through."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def limit_bytes(variable: str, default_mib: int) -> int:
    """A size limit in bytes: `default_mib` MiB, or the environment variable `variable` (in MiB) when set."""
    value = os.environ.get(variable, "")
    if not value:
        return default_mib << 20
    if not value.isdigit() or int(value) < 1:
        raise OutputError(f"${variable} must be a whole number of MiB, got {value!r}")
    return int(value) << 20


def too_large(path: str | os.PathLike, size: int, limit: int, what: str, variable: str) -> str:
    return (f"{path}: {size / 2**20:,.1f} MiB, over the {limit >> 20:,} MiB limit for {what}; refused "
            f"(raise it with {variable}=<MiB> if the file is trusted)")


def read_limited(path: str | os.PathLike, limit: int, what: str, variable: str) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; devices, FIFOs and larger files are refused
    (OSError for what cannot be read, ValueError with the reason for what is refused)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(2, "No such file or directory")
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file (a folder, device or pipe); refused")
    size = path.stat().st_size
    if size > limit:
        raise ValueError(too_large(path, size, limit, what, variable))
    with path.open("rb") as fh:
        content = fh.read(limit + 1)
    if len(content) > limit:
        raise ValueError(too_large(path, len(content), limit, what, variable))
    return content
