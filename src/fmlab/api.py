"""fmlab's Python API: the data, the models and their recipes, training, evaluation and comparison, studies,
tuning, prediction and export. The CLI is a thin face over these functions. `Run` and `Study` show themselves in
a notebook (`_repr_html_`: key numbers, curves, results with confidence intervals) and in a terminal (one line).

    import fmlab
    run = fmlab.train("cnn", epochs=2, train_size=5000, out="runs/api-cnn")
    run.evaluate()["accuracy"]
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmlab.config import StudyConfig, TrainConfig
from fmlab.data import FashionMNIST
from fmlab.errors import ConfigError
from fmlab.runs import Predictor

PathLike = str | os.PathLike[str]
Images = Sequence[PathLike]


def load_data(data_dir: PathLike | None = None) -> FashionMNIST:
    """Fashion-MNIST as uint8 arrays, its four files verified against their checksums (found in `data_dir`,
    $FMLAB_DATA_DIR, the system's dataset folder or the cache, else downloaded from the official mirror)."""
    from fmlab.data import load

    return load(data_dir)


def describe_data(data_dir: PathLike | None = None) -> dict[str, Any]:
    """Where the data was found, checksums, counts per split and class, and pixel statistics."""
    from fmlab.data.summary import describe

    return describe(data_dir)


def list_models() -> dict[str, dict[str, Any]]:
    """Every registered model by name: family, description, default arguments, training recipe, parameters."""
    from fmlab import models

    return {name: {"family": spec.family, "description": spec.description, "defaults": spec.defaults,
                   "recipe": spec.recipe, "params": models.count_parameters(models.build(name))}
            for name, spec in ((n, models.get(n)) for n in models.names())}


def recipe(model: str) -> dict[str, Any]:
    """The training settings `model` trains with unless told otherwise (what `train(model)` uses)."""
    from fmlab import models

    return dict(models.recipe(model))


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None) -> str:
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" if header else ""
    return f"<table>{head}{cells}</table>"


@dataclass(frozen=True, repr=False)
class Run:
    """A trained model's run folder: its resolved settings (`spec`), per-epoch `history`, test `metrics`, and
    the predictor that evaluation, `predict` and `export` all load."""

    path: Path
    spec: TrainConfig
    history: list[dict[str, float]]
    metrics: dict[str, Any]

    @property
    def model(self) -> str:
        """The registered model's name."""
        return self.spec.model

    @property
    def test_acc(self) -> float:
        """Accuracy on the 10,000 test images (the one look at them)."""
        return float(self.metrics["test_acc"])

    def predictor(self) -> Predictor:
        """The saved model with its normalisation and test-time averaging, loaded with weights_only=True."""
        from fmlab.runs import RunDir

        return RunDir(self.path).read_predictor()

    def evaluate(self, out: PathLike | None = None, *, data_dir: PathLike | None = None, seed: int = 0
                 ) -> dict[str, Any]:
        """See `fmlab.evaluate`."""
        return evaluate(self, out, data_dir=data_dir, seed=seed)

    def predict(self, images: Images, *, top_k: int = 3, invert: bool | None = None) -> list[dict[str, Any]]:
        """See `fmlab.predict`."""
        return predict(self, images, top_k=top_k, invert=invert)

    def export(self, onnx: PathLike, *, opset: int = 17, limit: int | None = None) -> dict[str, Any]:
        """See `fmlab.export`."""
        return export(self, onnx, opset=opset, limit=limit)

    def __repr__(self) -> str:
        m = self.metrics
        return (f"Run({self.model}, test accuracy {self.test_acc:.2%}, {m['epochs_run']} epochs, "
                f"{m['train_time_s']:.1f} s training, {m['params']:,} parameters, {self.path})")

    def _repr_html_(self) -> str:
        m = self.metrics
        best_val = "n/a" if m.get("best_val_acc") is None else f"{m['best_val_acc']:.2%}"  # a diverged run has none
        rows = [("model", self.model), ("test accuracy", f"{self.test_acc:.2%}"),
                ("test loss", f"{m['test_loss']:.4f}"), ("best validation accuracy", best_val),
                ("epochs", f"{m['epochs_run']} ({m['status']})"), ("training time", f"{m['train_time_s']:.1f} s"),
                ("parameters", f"{m['params']:,}"), ("precision / device", f"{m['precision']} / {m['device']}"),
                ("folder", str(self.path))]
        from fmlab.evaluation.plots import curves_figure, png

        image = base64.b64encode(png(curves_figure(self.history, self.model))).decode()
        return f"{_table(rows)}<img alt='training curves' src='data:image/png;base64,{image}'>"


def open_run(path: PathLike) -> Run:
    """The finished run in `path` (a folder written by `train` or `fmlab train`)."""
    from fmlab.runs import RunDir

    run = RunDir(path).finished()
    return Run(Path(path), run.read_spec()[0], run.read_history(), run.read_metrics())


def _run_path(run: Run | PathLike) -> Path:
    return run.path if isinstance(run, Run) else Path(run)


def train(
    model: str | None = None,
    *,
    config: PathLike | Mapping[str, Any] | None = None,
    out: PathLike = "runs/train",
    device: str = "auto",
    data: FashionMNIST | None = None,
    data_dir: PathLike | None = None,
    resume: bool = False,
    force: bool = False,
    progress: bool | None = None,
    **settings: Any,
) -> Run:
    """Train `model` with its recipe, overridden by `config` (a TOML file or a dict) and then by `settings`
    (epochs=..., lr=..., model_args={...}: any training setting); write the run folder `out` and return the run.
    `resume` continues the interrupted run in `out` as it was; `force` replaces another run there. `device`
    is where it trains (auto: CUDA, else MPS, else the CPU), not part of what the run is."""
    from fmlab.config import read_toml
    from fmlab.data import load
    from fmlab.runs import RunDir, resolve
    from fmlab.training.fit import fit

    given = {"model": model, **settings} if model is not None else dict(settings)
    run = RunDir(out)
    if resume:
        if force:
            raise ConfigError("--resume continues the run in --out and --force replaces it; choose one")
        if given or config:
            flags = ", ".join(f"--{k.replace('_', '-')}" for k in given) or "--config"
            raise ConfigError(f"--resume continues the saved run as it was; drop {flags} "
                              "(or start afresh with --force)")
        spec, _ = run.read_spec()
    else:
        layers = [] if config is None else [
            ("config", dict(config)) if isinstance(config, Mapping) else (str(config), read_toml(config))]
        spec = resolve([*layers, ("options", given)])
    fit(spec, run, data=data if data is not None else load(data_dir), device=device, resume=resume, force=force,
        progress=progress)
    return open_run(out)


def evaluate(run: Run | PathLike, out: PathLike | None = None, *, data_dir: PathLike | None = None, seed: int = 0
             ) -> dict[str, Any]:
    """Evaluate one run on the test set: metrics, calibration, per-class report, figures, complexity and a
    checked explanation (method and layer chosen by measurement). Written to `out` (default: the run's eval
    folder); returns the numbers and `out_dir`."""
    from fmlab.evaluation.runner import evaluate_run

    return evaluate_run(_run_path(run), out, data_dir=data_dir, seed=seed, explain_it=True)


def compare(runs: Sequence[Run | PathLike], out: PathLike | None = None, *, data_dir: PathLike | None = None,
            seed: int = 0, names: Sequence[str] | None = None) -> dict[str, Any]:
    """Evaluate several runs side by side into `out` (default: PARENT/comparison): each run's evaluation, the
    Input | model | model Grad-CAM view with each explainer's faithfulness checks, how much the models' maps
    agree, and their robustness to shifts, rotations and noise. Returns the comparison's numbers, each run's
    full evaluation (`evaluations`: per-class metrics, one-vs-rest ROC AUCs, calibration, cost) and `out_dir`."""
    from fmlab.evaluation.comparison import compare_runs
    from fmlab.runs import ComparisonDir

    paths = [_run_path(r) for r in runs]
    if len(paths) < 2:
        raise ConfigError("compare needs at least two runs; evaluate one run with fmlab.evaluate")
    target = Path(out) if out is not None else Path(os.path.commonpath([p.resolve() for p in paths])) / "comparison"
    summary = compare_runs(paths, target, data_dir=data_dir, seed=seed, names=names)
    layout = ComparisonDir(target)
    return {**summary, "evaluations": {name: layout.run(name).read_metrics() for name in summary["models"]}}


@dataclass(frozen=True, repr=False)
class Study:
    """A study folder: `summary` (every variant's metrics over seeds with 95% CIs, the best variant per family,
    the corrected significance tests), the report, and each trial's run."""

    path: Path
    summary: dict[str, Any]

    @property
    def report_path(self) -> Path:
        """The HTML report a person opens in a browser."""
        from fmlab.runs import StudyDir

        return StudyDir(self.path).report

    def findings(self) -> list[str]:
        """One sentence per family (its best variant, best first), then one per significance test."""
        from fmlab.study.findings import headline

        return [*headline(self.summary["rows"], self.summary["best"]),
                *(c["sentence"] for c in self.summary["comparisons"])]

    def run(self, family: str, variant: str = "baseline", seed: int | None = None) -> Run:
        """The run of one trial (default: the study's first seed)."""
        from fmlab.runs import StudyDir

        return open_run(StudyDir(self.path).trial(family, variant, self.summary["seeds"][0] if seed is None
                                                  else seed).path)

    def table(self, fmt: str = "markdown", out: PathLike | None = None) -> str:
        """The results table as latex (booktabs), markdown or csv: mean +- std, 95% CI, significance marks;
        also written to `out` when given."""
        from fmlab.io import write_text
        from fmlab.runs import check_output
        from fmlab.study.table import FORMATS, render

        if fmt not in FORMATS:
            raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, not '{fmt}'")
        text = render(self.summary, fmt)
        if out is not None:
            write_text(check_output(out, [self.path]), text)
        return text

    def write_report(self) -> Path:
        """Re-render the HTML and Markdown report from the study folder."""
        from fmlab.study.report import write_report

        return write_report(self.path)

    def write_pdf(self) -> Path:
        """Print the HTML report to report.pdf through headless Chromium."""
        from fmlab.study.report import write_pdf

        return write_pdf(self.path)

    def __repr__(self) -> str:
        rows, best = self.summary["rows"], self.summary["best"]
        top = max((r for r in rows if best.get(r["family"]) == r["variant"]), key=lambda r: r["accuracy"]["mean"])
        return (f"Study({self.summary['study']}: {len(rows)} variants x {len(self.summary['seeds'])} seeds, best "
                f"{top['family']}/{top['variant']} {top['accuracy']['mean']:.2%}, {self.path})")

    def _repr_html_(self) -> str:
        from fmlab.study.findings import ci_range
        from fmlab.study.summary import changes_text

        tests = {c["a"]: c for c in self.summary["comparisons"] if c["kind"] == "variant_vs_baseline"}
        rows = []
        for r in self.summary["rows"]:
            acc, test = r["accuracy"], tests.get(f"{r['family']}/{r['variant']}")
            verdict = "" if test is None else f"{100 * test['diff']:+.2f} pp, " + (
                f"significant (Holm p={test['p_holm']:.3f})" if test["significant"] else "not significant")
            rows.append((r["family"], r["variant"], changes_text(r["changes"]) or "-",
                         f"{acc['mean']:.2%}", ci_range(acc),
                         f"{r['macro_f1']['mean']:.4f}", f"{r['train_time_s']['mean']:.1f}", verdict))
        header = ["family", "variant", "changes", "accuracy", "95% CI", "macro F1", "train s", "vs baseline"]
        items = "".join(f"<li>{html.escape(s)}</li>" for s in self.findings())
        return f"<p>{html.escape(repr(self))}</p>{_table(rows, header)}<ul>{items}</ul>"


def open_study(path: PathLike) -> Study:
    """The finished study in `path`."""
    from fmlab.runs import StudyDir

    return Study(Path(path), StudyDir(path).read_summary())


def _study_config(config: PathLike | Mapping[str, Any] | StudyConfig) -> StudyConfig:
    from fmlab.config import load_study, validate

    if isinstance(config, StudyConfig):
        return config
    return validate(StudyConfig, dict(config), "study") if isinstance(config, Mapping) else load_study(config)


def run_study(
    config: PathLike | Mapping[str, Any] | StudyConfig,
    out: PathLike | None = None,
    *,
    executor: str = "local",
    scheduler: str = "local:2",
    device: str | None = None,
    data_dir: PathLike | None = None,
    report: bool = True,
    track: str | None = None,
    log: Callable[[str], None] = print,
    status: Callable[[str], None] | None = None,
) -> Study:
    """Run a study from a TOML file or a dict (the study file's tables): its [tune] searches first, then every
    trial not already finished (locally, or on Dask with executor="dask"), the summary with confidence
    intervals and corrected tests, the comparison of each family's best variant and the report. `out`
    defaults to runs/<study name>; `track` logs to MLflow."""
    from fmlab.study.run import run_study as run

    study = _study_config(config)
    target = Path(out) if out is not None else Path("runs") / study.name
    run(study, target, executor=executor, scheduler=scheduler, device=device,
        data_dir=str(data_dir) if data_dir else None, report=report, track=track, log=log, status=status)
    return open_study(target)


def study_status(config: PathLike | Mapping[str, Any] | StudyConfig, out: PathLike | None = None,
                 data_dir: PathLike | None = None) -> list[str]:
    """Which trials are done, partly trained or not started, and the time they took; runs nothing."""
    from fmlab.runs import StudyDir
    from fmlab.study.plan import plan
    from fmlab.study.progress import status_lines

    study = _study_config(config)
    layout = StudyDir(out or Path("runs") / study.name)
    trials = plan(study, layout.read_tune_summary())
    checksums = load_data(data_dir).checksums
    lines = status_lines(trials, [layout.trial(t.family, t.variant, t.seed) for t in trials],
                         [t.key(checksums) for t in trials])
    return [f"{study.name} ({layout.path}): {lines[0]}", *lines[1:]]


def tune_grid(models: str | Sequence[str], params: Mapping[str, Sequence[Any]], *, out: PathLike = "runs/tune-grid",
              data_dir: PathLike | None = None, **options: Any) -> dict[str, Any]:
    """scikit-learn GridSearchCV (or HalvingGridSearchCV with halving=True) over skorch-wrapped models, the same
    grid for each model, on the training split (cv folds or "holdout"); the best setting refitted and scored
    once on the test set. Options: cv, halving, executor, scheduler, train_size, val_size, epochs, seed,
    device. Returns the best setting overall and per model, its scores and the result files."""
    from fmlab.config import GridSection, validate
    from fmlab.tune import check_grid, run_grid

    names = [models] if isinstance(models, str) else list(models)
    section = validate(GridSection, {"models": names, "params": {k: list(v) for k, v in params.items()}, **options},
                       "options")
    check_grid(section)
    return run_grid(section, Path(out), load_data(data_dir))


def tune_optuna(model: str, trials: int = 20, *, out: PathLike = "runs/tune-optuna",
                data_dir: PathLike | None = None, **options: Any) -> dict[str, Any]:
    """An Optuna TPE search with pruning on validation accuracy (resumable; workers share it through
    `storage`). Options: storage, study_name, pruner, timeout, space (TOML file or dict), sampler_seed,
    train_size, val_size, epochs, seed, device. Returns the best trial, importances and the result files."""
    from fmlab.config import OptunaSection, validate
    from fmlab.tune import check_optuna, run_optuna

    if isinstance(options.get("space"), os.PathLike):
        options["space"] = str(options["space"])
    section = validate(OptunaSection, {"model": model, "trials": trials, **options}, "options")
    check_optuna(section)
    return run_optuna(section, Path(out), load_data(data_dir))


def predict(run: Run | PathLike, images: Images, *, top_k: int = 3, invert: bool | None = None,
            gradcam: PathLike | None = None) -> list[dict[str, Any]]:
    """Classify image files (PNG/JPEG photos, .npy arrays, IDX files) with a run's model: per image the top
    classes and what was done to the pixels (`preprocessing`), or an `error` for a file that could not be read.
    `invert` None reads a photo's background off its border; `gradcam` writes a photo | input | heatmap sheet."""
    from fmlab.infer.predict import predict as run_predict

    return run_predict(_run_path(run), [Path(p) for p in images], top_k=top_k, invert=invert, gradcam=gradcam)


def export(run: Run | PathLike, onnx: PathLike, *, opset: int = 17, limit: int | None = None,
           data_dir: PathLike | None = None) -> dict[str, Any]:
    """Export a run's model to ONNX (dynamic batch), verify it against torch on the test set (the first `limit`
    images) and time both runtimes."""
    from fmlab.infer.export import export_onnx

    return export_onnx(_run_path(run), onnx, opset, limit=limit, data_dir=data_dir)
