"""Studies: plan expansion and validation, resumable runs (kill -9 included), Dask, the quick study end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fmlab.cli import main
from fmlab.config import StudyConfig, load_study, validate
from fmlab.errors import ConfigError
from fmlab.study.plan import plan
from fmlab.study.run import DONE, run_study, trial_dir

ROOT = Path(__file__).resolve().parents[1]

TINY = """
name = "tiny"
seeds = [0, 1]

[defaults]
epochs = {epochs}
train_size = 1000
val_size = 500
batch_size = 100
device = "cpu"

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
    rows = json.loads((out / "summary.json").read_text())["rows"]
    return {f"{r['family']}/{r['variant']}": r["accuracy"]["mean"] for r in rows}


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
    by = {(t.family, t.variant, t.seed): t.config for t in trials}
    assert by["a", "baseline", 3].lr == 2e-3 and by["a", "fast", 3].lr == 1e-2 and by["b", "baseline", 3].lr == 1e-3
    assert by["a", "wide", 3].model_args == {"channels": [8, 16]} and by["a", "fast", 4].epochs == 2
    assert by["a", "fast", 4].model_args == {"channels": [4, 8]}
    keys = [t.key({"f": "x"}) for t in trials]
    assert len(set(keys)) == len(keys) and keys == [t.key({"f": "x"}) for t in plan(study)]
    assert trials[0].key({"f": "x"}) != trials[0].key({"f": "y"})  # data checksums are part of the key


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
     "families.a.baseline: model 'logreg' has no argument 'channels'"),
    ("[families.a\nmodel = 1", "tiny.toml"),
])
def test_bad_study_files_are_one_line_errors(tmp_path, capsys, body, message):
    path = tmp_path / "tiny.toml"
    path.write_text(body)
    with pytest.raises(ConfigError) as info:
        plan(load_study(path))
    assert message in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(SystemExit) as code:
        main(["study", "run", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code.value.code == 2 and err.count("\n") == 1 and message in err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- running (real data, tiny budgets)

@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory, real_data) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "study"
    run_study(tiny(out.parent, epochs=2), out, log=lambda _: None, report=False)
    return out


@pytest.mark.integration
def test_study_outputs_and_statistics(tiny_study):
    summary = json.loads((tiny_study / "summary.json").read_text())
    assert [(r["family"], r["variant"]) for r in summary["rows"]] == [
        ("lin", "baseline"), ("lin", "l2"), ("small", "baseline")]
    row = summary["rows"][0]
    for metric in ("accuracy", "macro_f1", "macro_auc", "ece", "train_time_s", "params", "macs"):
        assert row[metric]["n"] == 2 and row[metric]["ci_low"] <= row[metric]["mean"] <= row[metric]["ci_high"]
    seed_acc = [json.loads((trial_dir(tiny_study, "lin", "baseline", s) / "metrics.json").read_text())["test_acc"]
                for s in (0, 1)]
    assert row["accuracy"]["mean"] == pytest.approx(sum(seed_acc) / 2)
    kinds = {(c["kind"], c["a"], c["b"]) for c in summary["comparisons"]}
    assert ("variant_vs_baseline", "lin/l2", "lin/baseline") in kinds
    pair = next(c for c in summary["comparisons"] if c["kind"] == "pair")
    assert {"diff", "ci_low", "ci_high", "p_max", "significant", "sentence"} <= set(pair)
    assert "McNemar p" in pair["sentence"] and f"{100 * abs(pair['diff']):.2f} pp" in pair["sentence"]
    assert ("not a significant difference" in pair["sentence"]) == (not pair["significant"])
    header = (tiny_study / "summary.csv").read_text().splitlines()[0]
    assert "accuracy_mean" in header and "accuracy_ci_low" in header
    assert (tiny_study / "figures" / "sensitivity_lin.png").stat().st_size > 0
    # figures for the first seed only; every seed has its numbers
    assert (trial_dir(tiny_study, "lin", "l2", 0) / "eval" / "roc.png").is_file()
    assert not (trial_dir(tiny_study, "lin", "l2", 1) / "eval" / "roc.png").exists()
    assert (trial_dir(tiny_study, "lin", "l2", 1) / "eval" / "metrics.json").is_file()


@pytest.mark.integration
def test_resume_skips_finished_trials_and_retrains_only_what_is_missing(tiny_study, tmp_path, monkeypatch):
    import shutil

    import fmlab.train.loop as loop

    out = tmp_path / "study"
    shutil.copytree(tiny_study, out)
    shutil.rmtree(trial_dir(out, "small", "baseline", 1))
    trained = []
    real_fit = loop.fit

    def counting_fit(cfg, *args, **kwargs):
        trained.append((cfg.model, cfg.seed))
        return real_fit(cfg, *args, **kwargs)

    monkeypatch.setattr(loop, "fit", counting_fit)
    lines = []
    run_study(tiny(tmp_path, epochs=2), out, log=lines.append, report=False)
    assert trained == [("simple-cnn", 1)]
    assert "5 already done" in lines[0]
    assert accuracies(out) == accuracies(tiny_study)


@pytest.mark.integration
def test_killed_study_resumes_with_identical_numbers(tiny_study, tmp_path):
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "fmlab", "study", "run", str(tiny(tmp_path, epochs=2)), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    target = trial_dir(out, "small", "baseline", 0) / "last.pt"  # mid-trial: one epoch saved, one to go
    deadline = time.monotonic() + 240
    while not target.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert target.exists(), "the study finished or stalled before the kill point"
    assert not (trial_dir(out, "small", "baseline", 0) / DONE).exists()
    for path in out.rglob("*.json"):  # every file a reader can see is whole
        json.loads(path.read_text())
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert accuracies(out) == accuracies(tiny_study)


@pytest.mark.integration
def test_dask_local_cluster_gives_the_same_summary_as_local(tiny_study, tmp_path):
    out = tmp_path / "study"
    run_study(tiny(tmp_path, epochs=2), out, executor="dask", scheduler="local:1", log=lambda _: None, report=False)
    local = json.loads((tiny_study / "summary.json").read_text())["rows"]
    dask = json.loads((out / "summary.json").read_text())["rows"]
    for metric in ("accuracy", "macro_f1", "macro_auc", "ece", "params", "macs"):
        assert [r[metric] for r in dask] == [r[metric] for r in local], metric


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
    html = (quick_study / "report.html").read_text()
    md = (quick_study / "report.md").read_text()
    summary = json.loads((quick_study / "summary.json").read_text())
    assert {r["family"] for r in summary["rows"]} == {"ffnn", "cnn", "lenet5", "simple", "logreg"}
    for anchor in ("results-table", "models-table", "class-table", "cost-table", "grid-table", "importance-table"):
        assert f'id="{anchor}"' in html
    assert html.count('src="data:image/png;base64,') >= 20 and 'src="trials/' not in html
    best_cnn = next(r for r in summary["rows"] if r["family"] == "cnn" and r["variant"] == summary["best"]["cnn"])
    assert f"{100 * best_cnn['accuracy']['mean']:.2f}%" in html  # numbers in the text come from the summary
    assert "## Results" in md and "(trials/" in md
    tune = json.loads((quick_study / "tune" / "summary.json").read_text())
    assert tune["grid"]["best_model"] in ("logreg", "simple-cnn") and tune["optuna"]["n_trials"] == 3
    timings = json.loads((quick_study / "timings.json").read_text())
    assert timings["trials"] == 22 and timings["total_s"] >= timings["trials_s"] > 0


@pytest.mark.integration
def test_report_escapes_names(quick_study, tmp_path):
    import shutil

    from fmlab.study.report import write_report

    out = tmp_path / "study"
    shutil.copytree(quick_study, out)
    study = json.loads((out / "study.json").read_text())
    study["families"]["cnn"]["title"] = "<script>alert(1)</script>"
    study["description"] = "a & b <i>"
    (out / "study.json").write_text(json.dumps(study))
    html = write_report(out).read_text()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
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
        driver.get((quick_study / "report.html").as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight]);")
        rows = driver.execute_script("return document.querySelectorAll('#results-table tr').length;")
        title = driver.title
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
        driver.save_screenshot(str(tmp_path / "report.png"))
    finally:
        driver.quit()
    assert title == "fmlab study: quick"
    assert len(images) >= 20 and all(ok and w > 0 and h > 0 for _, ok, w, h in images), images
    assert rows == 1 + len(json.loads((quick_study / "summary.json").read_text())["rows"])
    assert errors == []
    shot = np.asarray(Image.open(tmp_path / "report.png").convert("L"), dtype=float)
    assert shot.shape[0] > 500 and shot.std() > 10 and (shot < 128).mean() > 0.005  # text and figures, not blank


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
    assert any("accuracy" in str(o.get("data", {}).get("text/html", "")) for o in outputs)


# ---------------------------------------------------------------- findings are read off the numbers

def history(*rows):
    return [{"train_acc": t, "val_acc": v, "val_loss": loss} for t, v, loss in rows]


@pytest.mark.parametrize("rows,expected", [
    ([(0.80, 0.80, 0.50), (0.90, 0.86, 0.40), (0.97, 0.87, 0.48)], "overfitting"),
    ([(0.80, 0.80, 0.50), (0.95, 0.88, 0.40), (0.96, 0.88, 0.40)], "mild overfitting"),
    ([(0.70, 0.75, 0.60), (0.80, 0.82, 0.50)], "more epochs would likely help"),
    ([(0.84, 0.88, 0.40), (0.85, 0.88, 0.39)], "strong regularisation"),
    ([(0.88, 0.87, 0.40), (0.885, 0.871, 0.39)], "no sign of over- or underfitting"),
])
def test_fit_diagnosis_reads_the_curves(rows, expected):
    from fmlab.study.findings import fit_diagnosis

    text = fit_diagnosis(history(*rows))
    assert expected in text and f"{100 * rows[-1][0]:.2f}%" in text
