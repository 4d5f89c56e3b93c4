"""MLflow tracking against a real `mlflow server` (SQLite backend) on a free port: a study killed mid-way and
resumed logs one parent and one child per trial, whose params, metrics and artifacts equal the study's files."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from cli_helpers import assert_one_line_error, run_cli
from fmlab.runs import RunDir, StudyDir
from fmlab.study.track import flatten

pytestmark = pytest.mark.integration

# one cheap family, big enough that a trial is still training when the first run is killed
STUDY = """
name = "tracked"
seeds = [0, 1]

[defaults]
epochs = 2
train_size = 20000
val_size = 1000
batch_size = 100

[families.lin]
model = "logreg"
[families.lin.variants]
l2 = { l2 = 1e-3 }
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    proc = subprocess.Popen(
        [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("mlflow server did not start")
            time.sleep(0.5)
    yield uri
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def run_study_cli(study: Path, out: Path, uri: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fmlab", "study", "run", str(study), "--out", str(out),
                             "--track", uri], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def test_a_killed_and_resumed_study_is_logged_once_with_its_own_numbers(server, tmp_path, real_data):
    from mlflow.tracking import MlflowClient

    study, out = tmp_path / "tracked.toml", tmp_path / "study"
    study.write_text(STUDY)
    layout = StudyDir(out)
    proc = run_study_cli(study, out, server)
    target = layout.trial("lin", "l2", 0).path / RunDir.STATE  # mid-way: two trials logged, one half-run
    deadline = time.monotonic() + 300
    while not target.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = run_study_cli(study, out, server)
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()

    client = MlflowClient(server)
    experiment = client.get_experiment_by_name("tracked")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("fmlab.role") == "study"]
    children = [r for r in runs if r.data.tags.get("fmlab.role") == "trial" and r.info.lifecycle_stage == "active"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    names = sorted(r.info.run_name for r in children)
    assert names == sorted(f"lin/{v}/seed{s}" for v in ("baseline", "l2") for s in (0, 1))  # no duplicates
    for child in children:
        tags = child.data.tags
        assert tags["mlflow.parentRunId"] == parents[0].info.run_id and child.info.status == "FINISHED"
        run = layout.trial(tags["family"], tags["variant"], int(tags["seed"]))
        assert run.read_done()["mlflow_run_id"] == child.info.run_id  # kept with the trial
        assert child.data.params == flatten(run.read_spec()[0].model_dump(mode="json"))
        assert tags["model"] == run.read_spec()[0].model
        history = run.read_history()
        curve = client.get_metric_history(child.info.run_id, "val_acc")
        assert [(m.step, m.value) for m in sorted(curve, key=lambda m: m.step)] == [
            (int(h["epoch"]), pytest.approx(h["val_acc"])) for h in history]
        assert child.data.metrics["test_accuracy"] == pytest.approx(run.eval.read_metrics()["accuracy"])
        files = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {RunDir.CONFIG, RunDir.HISTORY, RunDir.METRICS, RunDir.CHECKPOINT, RunDir.EVAL} <= files
    local = client.download_artifacts(children[0].info.run_id, RunDir.METRICS, str(tmp_path / "back"))
    tags = children[0].data.tags
    run = layout.trial(tags["family"], tags["variant"], int(tags["seed"]))
    assert json.loads(Path(local).read_text()) == run.read_metrics()
    on_parent = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {StudyDir.SUMMARY, StudyDir.SUMMARY_CSV, StudyDir.REPORT_HTML, StudyDir.COMPARISON} <= on_parent
    summary = client.download_artifacts(parents[0].info.run_id, StudyDir.SUMMARY, str(tmp_path / "parent"))
    assert json.loads(Path(summary).read_text()) == layout.read_summary()


def test_an_unreachable_server_is_one_line_before_anything_trains(tmp_path, capsys, real_data):
    study, out = tmp_path / "tracked.toml", tmp_path / "study"
    study.write_text(STUDY)
    code, _, err = run_cli(capsys, "study", "run", str(study), "--out", str(out), "--track",
                           f"http://127.0.0.1:{free_port()}")
    assert_one_line_error(code, err, "tracking at http://127.0.0.1:")
    assert not StudyDir(out).trial("lin", "baseline", 0).path.exists()


def test_a_sqlite_store_without_a_server_and_a_failure_mid_way_keep_the_studys_results(tmp_path, real_data,
                                                                                        monkeypatch):
    from mlflow.tracking import MlflowClient

    from fmlab.study.run import run_study

    monkeypatch.chdir(tmp_path)  # MLflow keeps a SQLite store's artifacts in ./mlruns
    study = tmp_path / "tracked.toml"
    study.write_text(STUDY.replace("train_size = 20000", "train_size = 2000"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    real_log_batch, calls = MlflowClient.log_batch, []

    def failing_log_batch(self, *args, **kwargs):  # the store goes away after the first trial is logged
        calls.append(1)
        if len(calls) > 1:
            raise ConnectionError("store went away")
        return real_log_batch(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", failing_log_batch)
    lines = []
    summary = run_study(study, tmp_path / "study", track=uri, log=lines.append, report=False)
    warnings = [line for line in lines if line.startswith("warning: tracking at ")]
    assert len(warnings) == 1 and "store went away" in warnings[0] and len(calls) == 2  # then no more tries
    assert len(summary["rows"]) == 2 and StudyDir(tmp_path / "study").read_summary()["rows"] == summary["rows"]
    monkeypatch.setattr(MlflowClient, "log_batch", real_log_batch)
    run_study(study, tmp_path / "study", track=uri, log=lines.append, report=False)  # logs what is missing
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("tracked").experiment_id])
    finished = sorted(r.info.run_name for r in runs if r.data.tags.get("fmlab.role") == "trial"
                      and r.info.lifecycle_stage == "active")
    assert finished == sorted(f"lin/{v}/seed{s}" for v in ("baseline", "l2") for s in (0, 1))
