"""MLflow tracking of a study (the `track` extra): one parent run per study, one child run per trial.

A child holds the trial's resolved settings as params, family/variant/seed/model as tags, its per-epoch curves
as metric histories, its test numbers (the summary's, from the same files) and its run folder's files as
artifacts; the parent gets the study's summary, comparison and report. Runs are found again by tags (the study
folder for the parent, the trial's key for a child) and a child's id is kept in the trial's done record, so a
resumed study logs each trial once. The study's own folder is the record: a tracking server that fails mid-way
costs one warning and the tracking of the rest of that run, never a trial (a later `fmlab study run` logs what
is missing); one that cannot be reached at the start is refused before anything trains.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

from fmlab.config import StudyConfig
from fmlab.errors import FmlabError
from fmlab.runs import RunDir, StudyDir
from fmlab.study.plan import Trial
from fmlab.study.summary import trial_record

ROLE, STUDY_DIR, KEY = "fmlab.role", "fmlab.study_dir", "fmlab.key"
PARENT = "mlflow.parentRunId"
# the run folder's files a child run carries (the recorded test predictions are left out: 10,000 logits say nothing new)
ARTIFACTS = (RunDir.CONFIG, RunDir.HISTORY, RunDir.METRICS, RunDir.CHECKPOINT)


class TrackingError(FmlabError):
    """The tracking server cannot be used."""


def flatten(spec: dict[str, Any]) -> dict[str, str]:
    """A resolved spec as MLflow params: model arguments one by one, every value as JSON text."""
    out = {k: json.dumps(v) for k, v in spec.items() if k != "model_args"}
    out.update({f"model_args.{k}": json.dumps(v) for k, v in spec.get("model_args", {}).items()})
    return out


class Tracker:
    def __init__(self, uri: str, study: StudyConfig, layout: StudyDir, log: Callable[[str], None]) -> None:
        # a server that is down answers in seconds, not after MLflow's default two minutes of retries
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise TrackingError("tracking needs MLflow: pip install 'fmlab[track]'") from None
        self.uri, self.layout, self.log, self.alive = uri, layout, log, True
        self.client = MlflowClient(tracking_uri=uri)
        name = study.track.experiment if study.track and study.track.experiment else study.name
        try:
            found = self.client.get_experiment_by_name(name)
            self.experiment = found.experiment_id if found else self.client.create_experiment(name)
            where = str(layout.path.resolve())
            runs = self.client.search_runs(
                [self.experiment], f"tags.`{ROLE}` = 'study' and tags.`{STUDY_DIR}` = '{_quoted(where)}'")
            self.parent = runs[0].info.run_id if runs else self.client.create_run(
                self.experiment, run_name=study.name, tags={ROLE: "study", STUDY_DIR: where}).info.run_id
        except Exception as exc:  # MLflow raises many kinds (connection, REST, store, URI errors)
            raise TrackingError(f"tracking at {uri}: {_why(exc)}") from None

    def trial(self, trial: Trial, run: RunDir) -> None:
        """Log a finished trial once (nothing when it has been logged or tracking has failed)."""
        if not self.alive:
            return
        done = run.read_done()
        if done.get("mlflow_run_id"):
            return
        try:
            run_id = self._child(trial, run, done["key"])
        except Exception as exc:
            return self._failed(exc)
        run.mark_done({**done, "mlflow_run_id": run_id})

    def _child(self, trial: Trial, run: RunDir, key: str) -> str:
        from mlflow.entities import Metric, Param, RunTag

        found = self.client.search_runs([self.experiment], f"tags.`{KEY}` = '{key}' and tags.`{PARENT}` = "
                                        f"'{self.parent}'")
        finished = [r for r in found if r.info.status == "FINISHED"]
        if finished:
            return finished[0].info.run_id
        for stale in found:  # a child left half-logged by an interrupted run: logged again whole
            self.client.delete_run(stale.info.run_id)
        tags = {PARENT: self.parent, KEY: key, ROLE: "trial", "family": trial.family, "variant": trial.variant,
                "seed": str(trial.seed), "model": trial.spec.model}
        child = self.client.create_run(self.experiment, run_name=trial.name, tags=tags).info.run_id
        now = int(time.time() * 1000)
        metrics = [Metric(name, float(row[name]), now, int(row["epoch"]))
                   for row in run.read_history() for name in row if name != "epoch"]
        record = trial_record(run)
        metrics += [Metric(f"test_{name}" if name == "accuracy" else name, float(value), now, 0)
                    for name, value in record.items() if name != "status"]
        params = [Param(k, v) for k, v in flatten(run.read_spec()[0].model_dump(mode="json")).items()]
        for start in range(0, len(metrics), 1000):  # MLflow's batch limit
            self.client.log_batch(child, metrics=metrics[start:start + 1000],
                                  params=params if start == 0 else [], tags=[RunTag("status", record["status"])])
        for name in ARTIFACTS:
            self.client.log_artifact(child, str(run.path / name))
        self.client.log_artifacts(child, str(run.path / RunDir.EVAL), RunDir.EVAL)
        self.client.set_terminated(child)
        return child

    def finish(self) -> None:
        """The study's summary, comparison and report on the parent run, which is then marked finished."""
        if not self.alive:
            return
        layout = self.layout
        try:
            for name in (StudyDir.SUMMARY, StudyDir.SUMMARY_CSV, StudyDir.STUDY, StudyDir.REPORT_HTML,
                         StudyDir.REPORT_MD, StudyDir.TIMINGS):
                if (layout.path / name).is_file():
                    self.client.log_artifact(self.parent, str(layout.path / name))
            for folder in (StudyDir.COMPARISON, StudyDir.FIGURES):
                if (layout.path / folder).is_dir():
                    self.client.log_artifacts(self.parent, str(layout.path / folder), folder)
            self.client.set_terminated(self.parent)
        except Exception as exc:
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        self.alive = False
        self.log(f"warning: tracking at {self.uri} failed ({_why(exc)}); the study goes on and keeps its own "
                 "results, run it again to log what is missing")


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _why(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__
