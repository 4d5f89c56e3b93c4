"""Studies: plan expansion and validation, resumable runs (kill -9 included), Dask, the quick study end to end."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cli_helpers import assert_one_line_error, run_cli
from fmlab.config import StudyConfig, TrainConfig, load_study, validate
from fmlab.errors import ConfigError
from fmlab.runs import RunDir, StudyDir
from fmlab.study.plan import plan
from fmlab.study.report import write_report
from fmlab.study.run import longest_first, run_study

ROOT = Path(__file__).resolve().parents[1]

# no device: trials train where the machine allows, which is not part of what a trial is
TINY = """
name = "tiny"
seeds = [0, 1]

[defaults]
epochs = {epochs}
train_size = 1000
val_size = 500
batch_size = 100

[families.lin]
model = "logreg"
title = "Linear <b>baseline</b>"
baseline = {{ lr = 1e-2 }}
[families.lin.variants]
l2 = {{ l2 = 1e-3 }}

[families.small]
model = "simple-cnn"
baseline = {{ lr = 3e-3, model_args = {{ channels = [4, 8] }} }}

[[compare]]
a = "small"
b = "lin"
"""


def tiny(tmp_path: Path, epochs: int = 1) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.format(epochs=epochs))
    return path


def accuracies(out: Path) -> dict[str, float]:
    rows = StudyDir(out).read_summary()["rows"]
    return {f"{r['family']}/{r['variant']}": r["accuracy"]["mean"] for r in rows}


def weights(run: RunDir) -> dict[str, torch.Tensor]:
    return run.read_predictor().state_dict()


def without_seconds(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


# ---------------------------------------------------------------- planning and validation (no data)

def test_plan_expands_families_variants_and_seeds_with_overrides_in_order():
    study = validate(StudyConfig, {
        "seeds": [3, 4],
        "defaults": {"lr": 1e-3, "epochs": 2},
        "families": {
            "a": {"model": "simple-cnn", "baseline": {"lr": 2e-3, "model_args": {"channels": [4, 8]}},
                  "variants": {"fast": {"lr": 1e-2}, "wide": {"model_args": {"channels": [8, 16]}}}},
            "b": {"model": "logreg"},
        },
    })
    trials = plan(study)
    assert [(t.family, t.variant, t.seed) for t in trials] == [
        ("a", "baseline", 3), ("a", "baseline", 4), ("a", "fast", 3), ("a", "fast", 4),
        ("a", "wide", 3), ("a", "wide", 4), ("b", "baseline", 3), ("b", "baseline", 4),
    ]
    by = {(t.family, t.variant, t.seed): t.spec for t in trials}
    assert by["a", "baseline", 3].lr == 2e-3 and by["a", "fast", 3].lr == 1e-2 and by["b", "baseline", 3].lr == 1e-3
    assert by["a", "wide", 3].model_args["channels"] == [8, 16] and by["a", "fast", 4].epochs == 2
    assert by["a", "fast", 4].model_args == {"channels": [4, 8], "activation": "relu", "dropout": 0.0}
    keys = [t.key({"f": "x"}) for t in trials]
    assert len(set(keys)) == len(keys) and keys == [t.key({"f": "x"}) for t in plan(study)]
    assert trials[0].key({"f": "x"}) != trials[0].key({"f": "y"})  # data checksums are part of the key


def test_trials_start_longest_first_and_equal_ones_keep_the_plan_order():
    study = validate(StudyConfig, {
        "seeds": [0, 1],
        "defaults": {"epochs": 4},
        "families": {
            "lin": {"model": "logreg"},
            "small": {"model": "simple-cnn", "variants": {"long": {"epochs": 40}, "subset": {"train_size": 200}}},
            "lenet": {"model": "lenet5"},
        },
    })
    order = [(t.family, t.variant, t.seed) for t in longest_first(plan(study), 60_000)]
    # simple-cnn x 40 epochs > LeNet-5 (2.6x its MACs) x 4 > simple-cnn x 4 > logreg x 4 > simple-cnn on 200 images
    assert order == [
        ("small", "long", 0), ("small", "long", 1), ("lenet", "baseline", 0), ("lenet", "baseline", 1),
        ("small", "baseline", 0), ("small", "baseline", 1), ("lin", "baseline", 0), ("lin", "baseline", 1),
        ("small", "subset", 0), ("small", "subset", 1),
    ]


@pytest.mark.parametrize("body,message", [
    ('bogus = 1\n[families.a]\nmodel = "logreg"', "unknown key 'bogus'"),
    ('[families.a]\nmodel = "nope"', "unknown model 'nope'"),
    ('[families.a]\nmodel = "logreg"\nbaseline = { lr = -1 }', "families.a.baseline: lr"),
    ('[families.a]\nmodel = "logreg"\n[families.a.variants]\nx = { learning_rate = 1 }', "unknown key 'learning_rate'"),
    ('seeds = [0, 0]\n[families.a]\nmodel = "logreg"', "seeds must be distinct"),
    ('[families.a]\nmodel = "logreg"\n[[compare]]\na = "a"\nb = "zz"', "zz"),
    ('[families.a]\nmodel = "logreg"\nvariants = { a = {}, b = {}, c = {}, d = {}, e = {}, f = {} }', "at most 5"),
    ('[families.a]\nmodel = "cnn"\nbaseline = { model_args = { channels = [0] } }', "families.a.baseline: "),
    ('[defaults]\nmodel_args = { channels = [4, 8] }\n[families.a]\nmodel = "logreg"',
     "defaults: model 'logreg' has no argument 'channels'"),
    ('[families.a]\nmodel = "logreg"\n[families.a.variants]\nx = { model = "cnn" }', "'model' cannot be set here"),
    ('[defaults]\nepochs = true\n[families.a]\nmodel = "logreg"', "defaults: epochs"),
    ('[families.a]\nmodel = "logreg"\n[evaluate]\nfoo = 1', "unknown key 'evaluate.foo'"),
    ('[families.a]\nmodel = "logreg"\n[tune.grid]\nmodels = ["logreg"]\nparams = { lr = [-1.0] }',
     "tune.grid: grid lr=-1.0: lr"),
    ('[families.a]\nmodel = "logreg"\n[tune.optuna]\nmodel = "logreg"\nspace = { params = { lr = 1 } }',
     "must be a table"),
    ('[families.a]\nmodel = "logreg"\n[tune]', "the [tune] table is empty"),
    ("[families.a\nmodel = 1", "tiny.toml"),
])
def test_bad_study_files_are_one_line_errors_before_any_trial(tmp_path, capsys, body, message):
    path = tmp_path / "tiny.toml"
    path.write_text(body)
    with pytest.raises(ConfigError) as info:
        plan(load_study(path))
    assert message in str(info.value) and "\n" not in str(info.value)
    code, _, err = run_cli(capsys, "study", "run", str(path), "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- status on a synthetic set (no real data)

STATUS = """
name = "status"
seeds = [0]
device = "cpu"
[defaults]
epochs = 4
val_size = 40
batch_size = 20
[families.lin]
model = "logreg"
baseline = { lr = 1e-2 }
[families.lin.variants]
blow-up = { optimizer = "sgd", lr = 10.0, momentum = 0.99, l2 = 100.0 }
patient = { early_stopping = 1, lr = 0.5, optimizer = "sgd" }
"""


def test_training_status_reaches_done_json_the_log_and_the_report(tmp_path, make_trusted):
    syn = make_trusted(train_per_class=20, test_per_class=5)
    (tmp_path / "status.toml").write_text(STATUS)
    lines: list[str] = []
    run_study(tmp_path / "status.toml", tmp_path / "out", data_dir=str(syn.path), log=lines.append)
    layout = StudyDir(tmp_path / "out")
    statuses = {v: layout.trial("lin", v, 0).read_done()["status"] for v in ("baseline", "blow-up", "patient")}
    assert statuses["blow-up"] == "diverged" and statuses["baseline"] == "finished"
    assert statuses["patient"] in ("early_stopped", "finished")
    for variant, status in statuses.items():
        assert any(line.endswith(f"lin/{variant}/seed0: {status}") for line in lines), lines
    rows = {r["variant"]: r for r in layout.read_summary()["rows"]}
    assert rows["blow-up"]["status"] == {"diverged": 1} and rows["blow-up"]["diverged"] == 1
    assert "1 diverged" in layout.report.read_text()


# ---------------------------------------------------------------- running (real data, tiny budgets)

@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory, real_data) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "study"
    run_study(tiny(out.parent, epochs=2), out, log=lambda _: None, report=False)
    return out


@pytest.mark.integration
def test_study_outputs_and_statistics(tiny_study):
    layout = StudyDir(tiny_study)
    summary = layout.read_summary()
    assert [(r["family"], r["variant"]) for r in summary["rows"]] == [
        ("lin", "baseline"), ("lin", "l2"), ("small", "baseline")]
    row = summary["rows"][0]
    for metric in ("accuracy", "macro_f1", "macro_auc", "ece", "train_time_s", "params", "macs"):
        assert row[metric]["n"] == 2 and row[metric]["ci_low"] <= row[metric]["mean"] <= row[metric]["ci_high"]
    seed_acc = [layout.trial("lin", "baseline", s).read_metrics()["test_acc"] for s in (0, 1)]
    assert row["accuracy"]["mean"] == pytest.approx(sum(seed_acc) / 2)
    kinds = {(c["kind"], c["a"], c["b"]) for c in summary["comparisons"]}
    assert ("variant_vs_baseline", "lin/l2", "lin/baseline") in kinds
    pair = next(c for c in summary["comparisons"] if c["kind"] == "pair")
    assert {"diff", "ci_low", "ci_high", "p_value", "p_holm", "mde", "win_probability", "significant",
            "sentence"} <= set(pair)
    assert f"Holm-corrected for {len(summary['comparisons'])} comparisons" in pair["sentence"]
    assert f"{100 * abs(pair['diff']):.2f} pp" in pair["sentence"]
    assert ("not a significant difference" in pair["sentence"]) == (not pair["significant"])
    header = (tiny_study / StudyDir.SUMMARY_CSV).read_text().splitlines()[0]
    assert "accuracy_mean" in header and "accuracy_ci_low" in header
    assert layout.sensitivity("lin").stat().st_size > 0
    assert layout.sensitivity("lin").with_suffix(".pdf").read_bytes().startswith(b"%PDF-")  # for papers
    # every trial has its numbers; figures are drawn once, for the report (test_quick_study_...)
    assert all(layout.trial("lin", v, s).eval.exists() for v in ("baseline", "l2") for s in (0, 1))
    assert not layout.trial("lin", "l2", 0).eval.figure("roc").exists() and not layout.comparison.path.exists()
    for family, variant in (("lin", "baseline"), ("lin", "l2"), ("small", "baseline")):
        assert layout.trial(family, variant, 0).read_done()["status"] == "finished"


@pytest.mark.integration
def test_resume_reruns_only_missing_or_damaged_trials_and_status_says_which(tiny_study, tmp_path, monkeypatch,
                                                                            capsys):
    import fmlab.training.fit as fit_module

    out = tmp_path / "study"
    shutil.copytree(tiny_study, out)
    layout = StudyDir(out)
    shutil.rmtree(layout.trial("small", "baseline", 1).path)
    layout.trial("lin", "l2", 0).path.joinpath(RunDir.METRICS).unlink()
    predictions = layout.trial("lin", "baseline", 1).path / RunDir.PREDICTIONS
    predictions.write_bytes(predictions.read_bytes()[:1000])
    trained = []
    real_fit = fit_module.fit

    def counting_fit(spec, *args, **kwargs):
        trained.append((spec.model, spec.seed))
        return real_fit(spec, *args, **kwargs)

    monkeypatch.setattr(fit_module, "fit", counting_fit)
    code, said, _ = run_cli(capsys, "study", "status", str(tiny(tmp_path, epochs=2)), "--out", str(out))
    assert code == 0 and "3/6 trials done" in said.splitlines()[0] and not trained  # status runs nothing
    assert "small/baseline/seed1: not started" in said and "lin/baseline/seed0: done (finished, " in said
    assert "lin/l2/seed0: to train again" in said
    lines = []
    run_study(tiny(tmp_path, epochs=2), out, log=lines.append, report=False)
    assert sorted(trained) == [("logreg", 0), ("logreg", 1), ("simple-cnn", 1)]
    assert "3 already done" in lines[0]
    progress = [line for line in lines if line.startswith("  [")]  # one per trial, done before or now
    assert len(progress) == 6 and progress[-1].startswith("  [6/6 done, ") and "left] " in progress[-2]
    assert accuracies(out) == accuracies(tiny_study)


def _killed_mid_trial(study_file: Path, out: Path, run: RunDir) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "fmlab", "study", "run", str(study_file), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    target = run.path / RunDir.STATE  # mid-trial: one epoch saved, one to go
    deadline = time.monotonic() + 240
    while not target.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return proc


@pytest.mark.integration
def test_a_killed_study_without_a_device_keeps_finished_epochs_and_ends_as_if_never_killed(tiny_study, tmp_path):
    out = tmp_path / "study"
    study_file = tiny(tmp_path, epochs=2)
    assert "device" not in study_file.read_text()
    run = StudyDir(out).trial("small", "baseline", 1)  # the second trial: the CNN's go first (longest first)
    _killed_mid_trial(study_file, out, run)
    assert run.has_state(), "the study finished or stalled before the kill point"
    saved = (run.path / RunDir.HISTORY).read_text().splitlines()
    assert len(saved) == 2  # the header and epoch 1
    for path in out.rglob("*.json"):  # every file a reader can see is whole
        json.loads(path.read_text())
    page = StudyDir(out).report.read_text()  # the report to read while it runs: the first CNN trial is done
    assert 'id="in-progress"' in page and "In progress: 1 of 6 trials finished" in page
    finished = StudyDir(out).trial("small", "baseline", 0).read_metrics()["test_acc"]
    assert f"{100 * finished:.2f}%" in page and page.count(">waiting<") == 5
    result = subprocess.run([sys.executable, "-m", "fmlab", "study", "run", str(study_file), "--out", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stderr and "[6/6 done, " in result.stderr  # not a terminal: plain lines, no bar
    resumed = (run.path / RunDir.HISTORY).read_text().splitlines()
    assert resumed[:2] == saved and len(resumed) == 3  # epoch 1 kept to the last digit of its time, not retrained
    reference = StudyDir(tiny_study).trial("small", "baseline", 1)
    assert without_seconds(run.read_history()) == without_seconds(reference.read_history())
    assert all(torch.equal(a, b) for a, b in zip(weights(run).values(), weights(reference).values(), strict=True))
    assert accuracies(out) == accuracies(tiny_study)
    assert 'id="in-progress"' not in StudyDir(out).report.read_text()  # the full report replaced it


@pytest.mark.integration
def test_dask_local_cluster_gives_the_same_summary_as_local(tiny_study, tmp_path):
    out = tmp_path / "study"
    environ = dict(os.environ)
    run_study(tiny(tmp_path, epochs=2), out, executor="dask", scheduler="local:1", log=lambda _: None, report=False)
    assert dict(os.environ) == environ  # distributed sets OMP_NUM_THREADS=1 here; later children must not inherit it
    local = StudyDir(tiny_study).read_summary()["rows"]
    dask = StudyDir(out).read_summary()["rows"]
    for metric in ("accuracy", "macro_f1", "macro_auc", "ece", "params", "macs"):
        assert [r[metric] for r in dask] == [r[metric] for r in local], metric


@pytest.mark.integration
def test_a_real_dask_cluster_gives_exactly_the_local_numbers(tiny_study, tmp_path):
    """Scheduler and a one-thread worker as separate processes, as on a cluster: each trial sets the thread
    count of its spec, so the numbers are the local run's."""
    dask = str(Path(sys.executable).parent / "dask")
    scheduler_file = tmp_path / "scheduler.json"
    procs = [subprocess.Popen([dask, "scheduler", "--scheduler-file", str(scheduler_file), "--port", "0",
                               "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        procs.append(subprocess.Popen([dask, "worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1",
                                       "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      env={**os.environ, "OMP_NUM_THREADS": "2"}))
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        assert address.startswith("tcp://")
        out = tmp_path / "study"
        run_study(tiny(tmp_path, epochs=2), out, executor="dask", scheduler=address, log=lambda _: None,
                  report=False)
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(timeout=30)
    assert accuracies(out) == accuracies(tiny_study)
    for family, variant in (("lin", "baseline"), ("small", "baseline")):
        remote, local = StudyDir(out).trial(family, variant, 1), StudyDir(tiny_study).trial(family, variant, 1)
        assert all(torch.equal(a, b) for a, b in zip(weights(remote).values(), weights(local).values(), strict=True))


# ---------------------------------------------------------------- the shipped quick study, end to end

@pytest.fixture(scope="module")
def quick_study(tmp_path_factory, real_data) -> Path:
    out = tmp_path_factory.mktemp("quick") / "study"
    code = subprocess.run([sys.executable, "-m", "fmlab", "study", "run", str(ROOT / "configs" / "quick.toml"),
                           "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert code.returncode == 0, code.stderr
    return out


@pytest.mark.integration
def test_quick_study_writes_report_tables_and_tuning(quick_study):
    layout = StudyDir(quick_study)
    html = layout.report.read_text()
    md = (quick_study / StudyDir.REPORT_MD).read_text()
    summary = layout.read_summary()
    assert {r["family"] for r in summary["rows"]} == {"ffnn", "cnn", "lenet5", "simple", "logreg"}
    for anchor in ("results-table", "models-table", "class-table", "cost-table", "grid-table", "importance-table"):
        assert f'id="{anchor}"' in html
    assert html.count('src="data:image/png;base64,') >= 20 and 'src="trials/' not in html
    best_cnn = next(r for r in summary["rows"] if r["family"] == "cnn" and r["variant"] == summary["best"]["cnn"])
    assert f"{100 * best_cnn['accuracy']['mean']:.2f}%" in html  # numbers in the text come from the summary
    ranges = [(float(lo), float(hi)) for lo, hi in re.findall(r"(-?[\d.]+)%\u2013(-?[\d.]+)%", html)]
    assert len(ranges) == len(summary["rows"]) and all(0 <= lo <= hi <= 100 for lo, hi in ranges)  # 2 seeds: wide
    assert "## Results" in md and f"({StudyDir.COMPARISON}/" in md
    hparams = html[html.index('id="hparams"'):html.index('id="classes"')]  # each best configuration in full
    cnn = layout.trial("cnn", summary["best"]["cnn"], 0).read_spec()[0]
    shown = ["optimizer", "lr", "batch_size", "epochs", *(k for k in ("warmup", "alternate_flip", "precision")
                                                         if getattr(cnn, k) != TrainConfig.model_fields[k].default)]
    assert "warmup" in shown and f"channels={cnn.model_args['channels']}" in hparams
    assert all(f"{k}={getattr(cnn, k)}" in hparams for k in shown)
    best = summary["best"]["cnn"]  # the figures the report shows are those of each family's best variant
    assert layout.comparison.run("cnn").read_metrics()["run"] == str(layout.trial("cnn", best, 0).path)
    assert layout.comparison.run("cnn").figure("roc").is_file()
    cost = html[html.index('id="cost-table"'):]
    for family in summary["best"]:  # speed as timed alone in the comparison, not beside another trial
        timed = layout.comparison.run(family).read_metrics()["complexity"]
        assert f'<td>{int(timed["throughput_images_per_s"]):,}</td><td>{timed["latency_ms"]:.2f}</td>' in cost
    tune = layout.read_tune_summary()
    assert set(tune["grid"]["best_by_model"]) == {"logreg", "simple-cnn"} and tune["optuna"]["n_trials"] == 3
    # the searches ran first, on the study's validation split, never scoring the test set ...
    assert (tune["grid"]["settings"]["val_size"], tune["grid"]["settings"]["seed"]) == (1000, 0)
    assert "test_acc" not in tune["grid"]
    # ... and each searched family trained their best setting at the study's budget, compared like any variant
    rows = {(r["family"], r["variant"]): r for r in summary["rows"]}
    for family, model, variant, best in (("simple", "simple-cnn", "tuned", tune["grid"]["best_by_model"]),
                                         ("logreg", "logreg", "tuned", tune["grid"]["best_by_model"])):
        assert rows[family, variant]["changes"] == best[model]["params"] and rows[family, variant]["seeds"] == 2
        spec = layout.trial(family, variant, 1).read_spec()[0]
        assert spec.epochs == 1 and spec.train_size == 3000 and spec.lr == best[model]["params"]["lr"]
    assert rows["logreg", "tuned-optuna"]["changes"] == tune["optuna"]["best"]["params"]  # its baseline is {}
    tests = {c["a"] for c in summary["comparisons"] if c["kind"] == "variant_vs_baseline"}
    assert {"simple/tuned", "logreg/tuned", "logreg/tuned-optuna"} <= tests
    csv_rows = (quick_study / StudyDir.SUMMARY_CSV).read_text().splitlines()
    assert "latency" not in csv_rows[0] and "images_per_s" not in csv_rows[0]  # timed beside another trial
    assert any(line.startswith(f"simple,simple-cnn,tuned,lr={best}") for line in csv_rows
               for best in [tune["grid"]["best_by_model"]["simple-cnn"]["params"]["lr"]])
    assert html.count('<td class="l">tuned</td>') == 2 and "tuned-optuna" in html and "never read the test set" in html
    timings = layout.read_timings()
    assert timings["trials"] == 28 and timings["total_s"] >= timings["trials_s"] > 0 and timings["comparison_s"] > 0
    assert timings["tune_s"] > 0


@pytest.mark.integration
def test_a_resumed_study_reuses_its_finished_searches_and_trials(quick_study, tmp_path):
    shutil.copytree(quick_study, tmp_path / "study")
    lines = []
    run_study(ROOT / "configs" / "quick.toml", tmp_path / "study", log=lines.append, report=False)
    assert [line for line in lines if line.startswith("tune: ")] == [
        f"tune: the {name} search finished before; its results are reused" for name in ("grid", "optuna")]
    assert "quick: 28 trials, 28 already done, executor local" in lines
    assert StudyDir(tmp_path / "study").read_summary()["rows"] == StudyDir(quick_study).read_summary()["rows"]
    # the report no longer calls the seconds spent on reusing 28 trials the study's wall time
    assert "study wall time" in StudyDir(quick_study).report.read_text()
    html = write_report(tmp_path / "study").read_text()
    assert "this run trained 0 of 28 trials in " in html and "study wall time" not in html


@pytest.mark.integration
def test_study_table_in_latex_markdown_and_csv_matches_the_summary(quick_study, tmp_path, capsys):
    import csv
    import io

    summary = StudyDir(quick_study).read_summary()
    code, latex, _ = run_cli(capsys, "study", "table", str(quick_study), "--format", "latex")
    assert code == 0
    assert latex.count(r"\begin{") == latex.count(r"\end{") == 2 and r"\toprule" in latex and r"\bottomrule" in latex
    body = latex.split(r"\midrule")[1].split(r"\bottomrule")[0]
    rows = [line for line in body.splitlines() if line.endswith(r"\\")]
    assert len(rows) == len(summary["rows"])
    assert all(line.count(" & ") == 8 for line in rows)  # nine columns in every row
    assert "_" not in latex.replace(r"\_", "")  # every underscore escaped (lr-high, batch_size ...)
    for line, row in zip(rows, summary["rows"], strict=True):
        assert f"{100 * row['accuracy']['mean']:.2f}" in line and f"{row['macro_f1']['mean']:.4f}" in line
    assert latex.count(r"\textbf{") >= 4  # the best of each quality column
    significant = {c["a"] for c in summary["comparisons"] if c["kind"] == "variant_vs_baseline" and c["significant"]}
    assert latex.count("$^{*}$") == len(significant)

    code, markdown, _ = run_cli(capsys, "study", "table", str(quick_study))
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    assert code == 0 and len(lines) == 2 + len(summary["rows"]) and "Holm" in markdown

    out = tmp_path / "table.csv"
    code, said, _ = run_cli(capsys, "study", "table", str(quick_study), "--format", "csv", "--out", str(out))
    table = list(csv.DictReader(io.StringIO(out.read_text())))
    assert code == 0 and str(out) in said
    for line, row in zip(table, summary["rows"], strict=True):
        assert (line["family"], line["variant"]) == (row["family"], row["variant"])
        assert float(line["accuracy_mean"]) == pytest.approx(row["accuracy"]["mean"], abs=1e-6)
        assert (line["significant_vs_baseline"] == "True") == (f"{row['family']}/{row['variant']}" in significant)
    assert_one_line_error(*run_cli(capsys, "study", "table", str(quick_study), "--format", "docx")[::2], "latex")


@pytest.mark.integration
def test_report_escapes_names(quick_study, tmp_path):
    out = tmp_path / "study"
    shutil.copytree(quick_study, out)
    layout = StudyDir(out)
    study = layout.read_study()
    study.families["cnn"].title = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    study.description = "a & b <i>"
    layout.write_study(study)
    html = write_report(out).read_text()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    markdown = (out / StudyDir.REPORT_MD).read_text()  # the Markdown twin is escaped like the HTML
    assert "<script>" not in markdown and "<img src=x" not in markdown and "&lt;script&gt;" in markdown
    assert "a &amp; b &lt;i&gt;" in html


def chrome():
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,2000"):
        options.add_argument(arg)
    options.binary_location = "/usr/bin/chromium"
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path="/usr/bin/chromedriver")
    return webdriver.Chrome(options=options, service=service)


@pytest.mark.integration
def test_report_renders_in_headless_chromium(quick_study, tmp_path):
    import numpy as np
    from PIL import Image

    driver = chrome()
    try:
        driver.get(StudyDir(quick_study).report.as_uri())
        title = driver.title
        images = driver.execute_script(
            "return Array.from(document.querySelectorAll('figure img')).map(i => [i.alt, i.complete, "
            "i.naturalWidth, i.naturalHeight, i.getBoundingClientRect().width]);")
        rows = driver.execute_script("return document.querySelectorAll('#results-table tr').length;")
        widest = max(images, key=lambda i: i[2])
        driver.execute_script("arguments[0].scrollIntoView(); arguments[0].click();",
                              driver.find_element("css selector", f'figure img[alt="{widest[0]}"]'))
        zoomed = driver.execute_script("const z = document.getElementById('zoom'); return [z.hidden, "
                                       "z.querySelector('img').getBoundingClientRect().width];")
        driver.execute_script("document.getElementById('zoom').click();")
        closed = driver.execute_script("return document.getElementById('zoom').hidden;")
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
        driver.save_screenshot(str(tmp_path / "report.png"))
        from fmlab.study.report import write_progress

        study = StudyDir(quick_study).read_study()
        copy = tmp_path / "running"
        shutil.copytree(quick_study, copy)
        driver.get(write_progress(copy, study, plan(study), {0, 1}, "1m05s").as_uri())
        progress = driver.execute_script(
            "return [document.getElementById('in-progress').innerText, "
            "document.querySelectorAll('#progress-table tr').length];")
    finally:
        driver.quit()
    assert title == "fmlab study: quick"
    assert len(images) >= 20 and all(ok and w > 0 and h > 0 for _, ok, w, h, _ in images), images
    # legible at 100% on a 1280 px window: no figure is drawn narrower than its pixels, up to the page's width
    assert all(shown >= min(w, 1100) - 1 for _, _, w, _, shown in images), images
    assert zoomed[0] is False and zoomed[1] >= widest[4] and closed  # a click enlarges, another closes
    assert progress[0].startswith("In progress: 2 of 22 trials finished, about 1m05s left") and progress[1] == 23
    assert rows == 1 + len(StudyDir(quick_study).read_summary()["rows"])
    assert errors == []
    shot = np.asarray(Image.open(tmp_path / "report.png").convert("L"), dtype=float)
    assert shot.shape[0] > 500 and shot.std() > 10 and (shot < 128).mean() > 0.005  # text and figures, not blank


@pytest.mark.integration
def test_report_pdf_has_its_pages_and_figures_and_no_browser_is_one_line(quick_study, tmp_path, capsys, monkeypatch):
    import re
    import zlib

    out = tmp_path / "study"
    shutil.copytree(quick_study, out)
    code, said, _ = run_cli(capsys, "study", "report", str(out), "--pdf")
    pdf = (out / StudyDir.REPORT_PDF).read_bytes()
    assert code == 0 and f"pdf: {out / StudyDir.REPORT_PDF}" in said and pdf.startswith(b"%PDF-")
    pages = len(re.findall(rb"/Type\s*/Page[^s]", pdf))
    figures = len(re.findall(rb"/Subtype\s*/Image", pdf))
    shown = StudyDir(out).report.read_text().count("<figure>")
    assert pages >= 5 and figures >= shown >= 15
    # Chromium writes a tagged PDF: its structure holds the report's section headings as H2 elements
    streams = [zlib.decompress(m) for m in re.findall(rb"stream\r?\n(.*?)endstream", pdf, re.S)
               if m[:1] == b"x"]
    assert pdf.count(b"/H2") + sum(s.count(b"/H2") for s in streams) >= 8
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    code, _, err = run_cli(capsys, "study", "report", str(out), "--pdf")
    assert_one_line_error(code, err, "needs Chromium")


@pytest.mark.integration
def test_walkthrough_notebook_runs_against_the_quick_study(quick_study):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "notebooks" / "walkthrough.ipynb", as_version=4)
    os.environ["FMLAB_STUDY_DIR"] = str(quick_study)
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    finally:
        del os.environ["FMLAB_STUDY_DIR"]
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3
    summary = StudyDir(quick_study).read_summary()
    shown = "".join(str(o.get("data", {}).get("text/html", "")) for o in outputs)
    assert all(f"{r['accuracy']['mean']:.2%}" in shown for r in summary["rows"])  # the study's own table
    text = "".join(o.get("text", "") for o in outputs)
    rescored, recorded = re.search(r"re-scored here: ([\d.]+); the run's metrics: ([\d.]+)", text).groups()
    assert rescored == recorded  # the saved predictor scores what the run recorded
    assert "\\begin{tabular}" in text and "tuned" in text


# ---------------------------------------------------------------- findings are read off the numbers

def history(*rows):
    return [{"train_acc": t, "val_acc": v, "val_loss": loss} for t, v, loss in rows]


def test_progress_estimates_what_is_left_from_the_finished_trials_of_each_family():
    from fmlab.study.progress import Progress

    trials = plan(StudyConfig.model_validate({"seeds": [0, 1, 2], "families": {
        "a": {"model": "logreg"}, "b": {"model": "lenet5"}}}))
    progress = Progress(trials, done={0})  # a/seed0 was done before: its time says nothing about this run
    assert progress.eta(5.0) is None
    progress.finished(1, {"wall_s": 10.0, "status": "finished"}, 10.0)
    # two a-trials known at 10 s; four left (b's three at a's mean, no b finished yet): 40 s at concurrency 1
    assert progress.eta(10.0) == pytest.approx(40.0)
    line = progress.finished(3, {"wall_s": 30.0, "status": "finished"}, 20.0)  # b/seed0: two at a time
    assert line.startswith("  [3/6 done, 20s elapsed, about ") and line.endswith("b/baseline/seed0: finished")
    # left: a/seed2 (10 s), b/seed1 and b/seed2 (30 s each) = 70 s of trial time at 40 s per 20 s of wall
    assert progress.eta(20.0) == pytest.approx(35.0)
    progress.started(2)
    progress.started(4)
    assert progress.bar(20.0, width=6) == ("[###...] 3/6 trials, running a/baseline/seed2, b/baseline/seed1, "
                                           "20s elapsed, ~35s left")


@pytest.mark.integration
def test_a_terminal_gets_a_bar_redrawn_in_place(tmp_path, real_data):
    import pty

    primary, secondary = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "fmlab", "study", "run", str(tiny(tmp_path, epochs=1)), "--out",
                             str(tmp_path / "a")], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=secondary, start_new_session=True)
    os.close(secondary)
    shown, deadline = "", time.monotonic() + 240
    while "[2/6 done, " not in shown and time.monotonic() < deadline:  # the bar once trials have finished
        try:
            shown += os.read(primary, 65536).decode()
        except OSError:  # the terminal closed with the process
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    os.close(primary)
    assert "\r\x1b[2K[" in shown and " trials, running small/baseline/seed0, " in shown
    assert "\r\x1b[2K  [1/6 done, " in shown and "] 1/6 trials, running " in shown  # a log line clears the bar


RECIPE = [(0.80, 0.82, 0.50), (0.89, 0.885, 0.35), (0.90, 0.895, 0.33)]


@pytest.mark.parametrize("rows,recipe_epochs,reference,expected", [
    ([(0.80, 0.80, 0.50), (0.90, 0.86, 0.40), (0.97, 0.87, 0.48)], 3, None, "overfitting"),
    ([(0.80, 0.80, 0.50), (0.95, 0.88, 0.40), (0.96, 0.88, 0.40)], 3, None, "mild overfitting"),
    ([(0.70, 0.75, 0.60), (0.80, 0.82, 0.50)], 3, None, "trained 2 of its recipe's 3 epochs: underfitting"),
    # still rising at its last epoch, as a one-cycle schedule always is: not underfitting by itself
    ([(0.70, 0.75, 0.60), (0.80, 0.82, 0.50), (0.88, 0.875, 0.40)], 3, None, "no sign of over- or underfitting"),
    ([(0.80, 0.80, 0.50), (0.85, 0.86, 0.40), (0.86, 0.87, 0.38)], 3, RECIPE, "underfitting relative to the recipe"),
    ([(0.80, 0.80, 0.50), (0.90, 0.88, 0.40), (0.91, 0.885, 0.38)], 3, RECIPE, "overfitting relative to the recipe"),
    (RECIPE, 3, RECIPE, "no sign of over- or underfitting"),
    ([(0.84, 0.88, 0.40), (0.85, 0.88, 0.39)], 2, None, "strong regularisation"),
    ([(0.88, 0.87, 0.40), (0.885, 0.871, 0.39)], 2, None, "no sign of over- or underfitting"),
])
def test_fit_diagnosis_compares_a_run_with_its_recipe(rows, recipe_epochs, reference, expected):
    from fmlab.study.findings import fit_diagnosis

    text = fit_diagnosis(history(*rows), recipe_epochs, reference and history(*reference))
    assert expected in text and f"{100 * rows[-1][0]:.2f}%" in text


@pytest.mark.integration
def test_one_thread_trials_run_two_at_a_time_with_the_numbers_of_a_trial_alone(tmp_path, real_data, monkeypatch):
    from fmlab.training.fit import fit

    monkeypatch.setattr(os, "cpu_count", lambda: 2)  # the machines here have two; the scheduler is what is tested
    study = tmp_path / "s.toml"
    study.write_text('seeds = [0, 1]\n[defaults]\nepochs = 3\ntrain_size = 3000\nval_size = 500\nthreads = 1\n'
                     '[families.lin]\nmodel = "logreg"\n[families.lin.variants]\nfast = { lr = 1e-2 }\n')
    run_study(study, tmp_path / "out", log=lambda _: None, report=False)
    layout = StudyDir(tmp_path / "out")
    spans = []
    for variant in ("baseline", "fast"):
        for seed in (0, 1):
            run = layout.trial("lin", variant, seed)
            spans.append(((run.path / RunDir.CONFIG).stat().st_mtime, (run.path / RunDir.DONE).stat().st_mtime))
    spans.sort()
    assert any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))  # they overlapped
    alone = fit(layout.trial("lin", "fast", 1).read_spec()[0], data=real_data, device="cpu", progress=False)
    assert layout.trial("lin", "fast", 1).read_metrics()["test_acc"] == alone.metrics["test_acc"]


def test_the_data_a_study_reads_follows_where_it_is_found_not_a_stale_cache(make_trusted, monkeypatch, real_data):
    from fmlab.study.run import cached_data

    monkeypatch.delenv("FMLAB_DATA_DIR", raising=False)
    assert cached_data(None).checksums == real_data.checksums
    trusted = make_trusted()
    monkeypatch.setenv("FMLAB_DATA_DIR", str(trusted.path))
    assert cached_data(None).checksums == trusted.checksums  # the same call, another folder: not the cached set
    monkeypatch.delenv("FMLAB_DATA_DIR")
    assert cached_data(None).checksums == real_data.checksums
