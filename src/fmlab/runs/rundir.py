"""The one module that knows the files of a run folder, of its evaluation, of a comparison and of a study.

A run folder:

    config.json      the resolved spec and the run's key; written first
    history.csv      one row per finished epoch
    last.pt          resume state (learner, history, best so far), present only while training is unfinished
    checkpoint.pt    the predictor (fmlab.runs.predictor) with the spec and key
    predictions.npz  the predictor's test-set scores, with the key and the digest of the weights that made them
    metrics.json     training metrics with the key; written last
    eval/            evaluation outputs (an EvalDir) with the key in its metrics.json
    done.json        a study's record that the trial, evaluation included, finished

Every file carries the run's key, so a folder is complete or visibly incomplete, never a mix of two
runs: `problem()` says what is missing or foreign, and a study re-runs such a trial.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fmlab.config import StudyConfig, TrainConfig, check_name, validate
from fmlab.errors import ConfigError, FmlabError, OutputError
from fmlab.io import atomic_path, make_dir, write_json, write_text
from fmlab.runs.predictor import Predictor
from fmlab.training import checkpoint

HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")


class RunDirError(FmlabError):
    """A run folder cannot be used as asked: it holds another run, foreign files, or is unfinished or damaged."""


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunDirError(f"{path}: missing; {what}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RunDirError(f"{path}: unreadable ({str(exc).splitlines()[0][:120]}); {what}") from None


def _read_object(path: Path, what: str) -> dict[str, Any]:
    value = _read_json(path, what)
    if not isinstance(value, dict):
        raise RunDirError(f"{path}: expected a JSON object; {what}")
    return value


def _csv_rows(path: Path) -> list[dict[str, float]]:
    with path.open(newline="") as fh:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(fh)]


def _write_bytes(path: Path, content: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(content)


@dataclass(frozen=True)
class Predictions:
    labels: np.ndarray  # (N,) int64
    logits: np.ndarray  # (N, 10) float32: the predictor's scores (flip-averaged log-probabilities with TTA)
    probs: np.ndarray  # (N, 10) float64, rows summing to 1
    key: str
    digest: str  # of the weights that made them (Predictor.digest)
    images: str  # of the images and labels they were made on (images_digest)


def images_digest(images: np.ndarray, labels: np.ndarray) -> str:
    """Identifies a labelled image set, so recorded predictions are used only for the set they were made on."""
    h = hashlib.blake2b(np.ascontiguousarray(images).tobytes(), digest_size=16)
    h.update(np.asarray(labels, np.int64).tobytes())
    return h.hexdigest()


class EvalDir:
    """Evaluation outputs: metrics.json (with the run's key), `<name>.png` figures (and `<name>.pdf`, the same
    figure as vectors) and `<name>.txt` texts."""

    METRICS = "metrics.json"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def write(self, result: dict[str, Any], figures: dict[str, bytes], texts: dict[str, str],
              vectors: dict[str, bytes]) -> dict[str, Any]:
        """Write the figures and texts, then metrics.json listing them; returns what metrics.json holds."""
        for name, png in figures.items():
            _write_bytes(self.figure(name), png)
        for name, pdf in vectors.items():
            _write_bytes(self.path / f"{name}.pdf", pdf)
        for name, text in texts.items():
            write_text(self.path / f"{name}.txt", text)
        files = [self.figure(name).name for name in figures] + [f"{name}.pdf" for name in vectors]
        files += [f"{name}.txt" for name in texts]
        result = {**result, "artifacts": sorted([*files, self.METRICS])}
        write_json(self.path / self.METRICS, result)
        return result

    def missing(self, result: dict[str, Any]) -> list[str]:
        """The files `result` (a metrics.json this folder holds) lists that are not there."""
        return [name for name in result.get("artifacts", []) if not (self.path / name).is_file()]

    def figure(self, name: str) -> Path:
        return self.path / f"{name}.png"

    def read_metrics(self) -> dict[str, Any]:
        return _read_object(self.path / self.METRICS, "evaluate the run again")

    def exists(self) -> bool:
        return (self.path / self.METRICS).is_file()


class ComparisonDir:
    """A side-by-side comparison: comparison.png (the view), comparison.json, further `<name>.png` figures
    and one EvalDir per run."""

    FIGURE, SUMMARY = "comparison.png", "comparison.json"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def run(self, name: str) -> EvalDir:
        return EvalDir(self.path / name)

    def write(self, summary: dict[str, Any], figures: dict[str, tuple[bytes, bytes]]) -> None:
        """comparison.json and the figures, each as `<name>.png` and `<name>.pdf`; the view is `comparison`."""
        for name, (png, pdf) in figures.items():
            _write_bytes(self.extra(name), png)
            _write_bytes(self.extra(name).with_suffix(".pdf"), pdf)
        write_json(self.path / self.SUMMARY, summary)

    def read(self) -> dict[str, Any]:
        return _read_object(self.path / self.SUMMARY, "run the study (or fmlab evaluate) again")

    def extra(self, name: str) -> Path:
        return self.path / f"{name}.png"

    @property
    def figure(self) -> Path:
        return self.path / self.FIGURE


class RunDir:
    CONFIG, HISTORY, STATE, CHECKPOINT = "config.json", "history.csv", "last.pt", "checkpoint.pt"
    PREDICTIONS, METRICS, EVAL, DONE = "predictions.npz", "metrics.json", "eval", "done.json"
    FILES = (CONFIG, HISTORY, STATE, CHECKPOINT, PREDICTIONS, METRICS, EVAL, DONE)

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.path)

    def _file(self, name: str) -> Path:
        return self.path / name

    # ---- starting, clearing -------------------------------------------------------------------------

    def entries(self) -> list[Path]:
        """What the folder holds, temporary files of interrupted writes aside."""
        if not self.path.is_dir():
            return []
        return [p for p in self.path.iterdir() if not (p.name.startswith(".") and p.name.endswith(".tmp"))]

    def start(self, spec: TrainConfig, key: str, *, force: bool = False) -> None:
        """Make this folder a new run of `spec`: refused when it holds another run (unless `force`) or
        anything that is not part of a run."""
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"{self.path} exists and is not a folder; choose another output folder")
        entries = self.entries()
        foreign = sorted(p.name for p in entries if p.name not in self.FILES)
        if foreign:
            raise RunDirError(f"{self.path} holds files that are not part of an fmlab run ({', '.join(foreign[:3])}); "
                              "choose an empty or new output folder")
        if entries and not force:
            raise RunDirError(f"{self.path} already holds a run; continue it with --resume or replace it with --force")
        self.clear()
        make_dir(self.path)
        write_json(self._file(self.CONFIG), {"key": key, "spec": spec.model_dump(mode="json")})

    def clear(self) -> None:
        """Remove every run file (and only those)."""
        for name in self.FILES:
            path = self._file(name)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()

    # ---- spec, history, resume state --------------------------------------------------------------

    def read_spec(self) -> tuple[TrainConfig, str]:
        """The run's resolved spec and key, as config.json holds them."""
        path = self._file(self.CONFIG)
        saved = _read_object(path, "this is not an fmlab run folder")
        if not isinstance(saved.get("key"), str):
            raise RunDirError(f"{path}: no run key; this is not a run folder of this fmlab")
        try:
            return validate(TrainConfig, saved.get("spec"), f"{path}: spec"), saved["key"]
        except ConfigError as exc:
            raise RunDirError(str(exc)) from None

    def write_history(self, history: list[dict[str, float]]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, HISTORY_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)
        write_text(self._file(self.HISTORY), buf.getvalue())

    def read_history(self) -> list[dict[str, float]]:
        path = self._file(self.HISTORY)
        try:
            return _csv_rows(path)
        except (OSError, ValueError, KeyError) as exc:
            raise RunDirError(f"{path}: unreadable history ({exc})") from None

    def holds_run(self) -> bool:
        return self._file(self.CONFIG).exists()

    def has_state(self) -> bool:
        return self._file(self.STATE).is_file()

    STATE_KEYS = ("learner", "history", "best")

    def save_state(self, state: dict[str, Any], key: str) -> None:
        """The resumable state after an epoch: the engine's learner, history and best-so-far."""
        checkpoint.save(self._file(self.STATE), {"format": checkpoint.FORMAT_VERSION, "state_dict": {},
                                                 "key": key, **{k: state[k] for k in self.STATE_KEYS}})

    def read_state(self, key: str) -> dict[str, Any]:
        path = self._file(self.STATE)
        state = checkpoint.read(path, ("format", "state_dict", "key", *self.STATE_KEYS))
        if state.get("key") != key:
            raise RunDirError(f"{path} belongs to another run; start afresh with --force")
        if not all(k in state for k in self.STATE_KEYS):
            raise RunDirError(f"{path} is damaged (no {', '.join(k for k in self.STATE_KEYS if k not in state)}); "
                              "start afresh with --force")
        return state

    def drop_state(self) -> None:
        self._file(self.STATE).unlink(missing_ok=True)

    # ---- results ----------------------------------------------------------------------------------

    @property
    def checkpoint(self) -> Path:
        return self._file(self.CHECKPOINT)

    def save_predictor(self, predictor: Predictor, key: str) -> None:
        checkpoint.save(self._file(self.CHECKPOINT), predictor.payload(key))

    def read_predictor(self) -> Predictor:
        path = self._file(self.CHECKPOINT)
        return Predictor.from_payload(checkpoint.read(path, Predictor.KEYS), str(path))

    def save_predictions(self, logits: np.ndarray, images: np.ndarray, labels: np.ndarray, key: str,
                         digest: str) -> None:
        """The predictor's scores on `images` (the test set), tied to the run, the weights and the images."""
        logits = np.asarray(logits, np.float32)
        probs = np.exp(logits - logits.max(1, keepdims=True))
        with atomic_path(self._file(self.PREDICTIONS)) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, logits=logits, probs=(probs / probs.sum(1, keepdims=True)).astype(np.float32),
                                labels=np.asarray(labels, np.int64), key=np.array(key), digest=np.array(digest),
                                images=np.array(images_digest(images, labels)))

    def read_predictions(self) -> Predictions:
        path = self._file(self.PREDICTIONS)
        try:
            with np.load(path, allow_pickle=False) as z:
                labels, logits = np.asarray(z["labels"], np.int64), np.asarray(z["logits"], np.float32)
                key, digest, images = str(z["key"]), str(z["digest"]), str(z["images"])
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise RunDirError(f"{path}: unreadable predictions ({str(exc).splitlines()[0][:120]})") from None
        if logits.ndim != 2 or logits.shape != (len(labels), 10) or not np.isfinite(logits).all():
            raise RunDirError(f"{path}: predictions of shape {logits.shape} for {len(labels)} labels, or not finite")
        z = logits.astype(np.float64)
        probs = np.exp(z - z.max(1, keepdims=True))
        return Predictions(labels, logits, probs / probs.sum(1, keepdims=True), key, digest, images)

    def save_metrics(self, metrics: dict[str, Any]) -> None:
        write_json(self._file(self.METRICS), metrics)

    def read_metrics(self) -> dict[str, Any]:
        return _read_object(self._file(self.METRICS), "the run did not finish")

    @property
    def eval(self) -> EvalDir:
        return EvalDir(self._file(self.EVAL))

    def mark_done(self, record: dict[str, Any]) -> None:
        write_json(self._file(self.DONE), record)

    def read_done(self) -> dict[str, Any]:
        return _read_object(self._file(self.DONE), "the trial did not finish")

    # ---- integrity ---------------------------------------------------------------------------------

    def problem(self, key: str | None = None, *, evaluated: bool = False) -> str | None:
        """Why this folder is not a finished run (of `key`, when given; evaluated too, with `evaluated`),
        or None when every file is present, readable and carries the run's key."""
        try:
            spec, run_key = self.read_spec()
            if key is not None and run_key != key:
                return "it holds another run (different settings, data or fmlab code)"
            if self.has_state():
                return f"training is unfinished ({len(self.read_history())} of {spec.epochs} epochs saved)"
            predictor, predictions = self.read_predictor(), self.read_predictions()
            parts = {self.METRICS: self.read_metrics().get("key"), self.CHECKPOINT: predictor.key}
            parts[self.PREDICTIONS] = predictions.key
            if evaluated:
                evaluation = self.eval.read_metrics()
                parts[f"{self.EVAL}/{EvalDir.METRICS}"] = evaluation.get("key")
                if self.eval.missing(evaluation):
                    return f"evaluation outputs are missing ({', '.join(self.eval.missing(evaluation)[:3])})"
            self.read_history()
        except FmlabError as exc:
            return str(exc)
        foreign = [name for name, k in parts.items() if k != run_key]
        if foreign:
            return f"{', '.join(foreign)} belong(s) to another run"
        if predictions.digest != predictor.digest():
            return f"{self.PREDICTIONS} was not made by the weights in {self.CHECKPOINT}"
        return None

    def finished(self) -> RunDir:
        """This run, checked to be finished and consistent (RunDirError otherwise)."""
        if not self.path.is_dir():
            raise RunDirError(f"{self.path}: no such run folder; pass a folder written by fmlab train")
        problem = self.problem()
        if problem is not None:
            hint = f"fmlab train --resume --out {self.path}" if self.has_state() else "train it again with --force"
            raise RunDirError(f"{self.path} is not a finished run: {problem}; {hint}")
        return self


def check_output(path: str | Path, reads: Iterable[str | Path]) -> Path:
    """`path` as an output file of a command that reads `reads`: refused when it is a folder, one of those
    inputs, a file of a run folder, or a checkpoint (an output never replaces an input or a model)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give the path of a file to write")
    if not path.exists():
        return path
    if any(Path(read).exists() and os.path.samefile(path, read) for read in reads):
        raise OutputError(f"{path} is one of this command's inputs; choose another output path")
    if path.name in RunDir.FILES and RunDir(path.parent).holds_run():
        raise OutputError(f"{path} belongs to the run in {path.parent}; choose another output path")
    if checkpoint.is_checkpoint(path):
        raise OutputError(f"{path} is a checkpoint; choose another output path")
    return path


def open_predictor(path: str | Path) -> Predictor:
    """The predictor of a finished run folder (checked) or of a bare checkpoint file."""
    path = Path(path)
    if path.is_dir():
        return RunDir(path).finished().read_predictor()
    return Predictor.from_payload(checkpoint.read(path, Predictor.KEYS), str(path))


class StudyDir:
    """A study folder: the study as run, its trials (one RunDir per family, variant and seed), summary,
    comparison, figures, searches and report."""

    STUDY, SUMMARY, SUMMARY_CSV, TIMINGS = "study.json", "summary.json", "summary.csv", "timings.json"
    REPORT_HTML, REPORT_MD, REPORT_PDF = "report.html", "report.md", "report.pdf"
    TRIALS, COMPARISON = "trials", "comparison"
    FIGURES, TUNE, TUNE_SUMMARY = "figures", "tune", "summary.json"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def trial(self, family: str, variant: str, seed: int) -> RunDir:
        """The run folder of a trial: its names are identifiers, and the folder is proven to lie inside the
        study folder (a symbolic link cannot lead a trial's writes and deletes elsewhere)."""
        path = self.path / self.TRIALS / check_name("family", family) / check_name("variant", variant)
        path = path / f"seed{int(seed)}"
        if not path.resolve().is_relative_to(self.path.resolve()):
            raise OutputError(f"{path} leads outside the study folder {self.path} (a symbolic link?); refused")
        return RunDir(path)

    def write_study(self, study: StudyConfig) -> None:
        """The study as its file set it (defaults left out, so it reads back with the same settings set)."""
        write_text(self.path / self.STUDY, study.model_dump_json(indent=2, exclude_unset=True))

    def read_study(self) -> StudyConfig:
        data = _read_object(self.path / self.STUDY, "run `fmlab study run` first")
        try:
            return validate(StudyConfig, data, str(self.path / self.STUDY))
        except ConfigError as exc:
            raise RunDirError(str(exc)) from None

    def write_summary(self, summary: dict[str, Any], table: str) -> None:
        write_json(self.path / self.SUMMARY, summary)
        write_text(self.path / self.SUMMARY_CSV, table)

    def read_summary(self) -> dict[str, Any]:
        return _read_object(self.path / self.SUMMARY, "run `fmlab study run` first")

    def write_timings(self, timings: dict[str, Any]) -> None:
        write_json(self.path / self.TIMINGS, timings)

    def read_timings(self) -> dict[str, Any]:
        return _read_object(self.path / self.TIMINGS, "run `fmlab study run` first")

    def write_progress(self, html: str) -> Path:
        """The in-progress page, in the report's place until the report replaces it."""
        write_text(self.path / self.REPORT_HTML, html)
        return self.path / self.REPORT_HTML

    def write_report(self, html: str, markdown: str) -> Path:
        write_text(self.path / self.REPORT_MD, markdown)
        write_text(self.path / self.REPORT_HTML, html)
        return self.path / self.REPORT_HTML

    @property
    def report(self) -> Path:
        return self.path / self.REPORT_HTML

    @property
    def comparison(self) -> ComparisonDir:
        return ComparisonDir(self.path / self.COMPARISON)

    def sensitivity(self, family: str) -> Path:
        return self.path / self.FIGURES / f"sensitivity_{check_name('family', family)}.png"

    def write_sensitivity(self, family: str, png: bytes, pdf: bytes) -> None:
        _write_bytes(self.sensitivity(family), png)
        _write_bytes(self.sensitivity(family).with_suffix(".pdf"), pdf)

    @property
    def tune(self) -> Path:
        """The folder the searches of the study's [tune] table write to."""
        return self.path / self.TUNE

    def write_tune_summary(self, summary: dict[str, Any]) -> None:
        write_json(self.tune / self.TUNE_SUMMARY, summary)

    def read_tune_summary(self) -> dict[str, Any] | None:
        path = self.tune / self.TUNE_SUMMARY
        return _read_object(path, "run the study again") if path.is_file() else None
