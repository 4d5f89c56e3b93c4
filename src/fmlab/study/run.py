"""Run a study's trials once each, locally or on a Dask cluster, into a resumable study folder.

A trial counts as done only when its run folder is finished, evaluated and consistent with the trial's
key (fmlab.runs.RunDir.problem); a damaged one is run again. A trial killed mid-way (kill -9
included) continues from its last completed epoch when its saved spec equals the planned one, else
it starts afresh; both give the numbers of an uninterrupted run because a trial is a pure function of
its spec (thread count included) and data.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import queue
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fmlab import models
from fmlab.config import StudyConfig, TrainConfig, load_study
from fmlab.data import FashionMNIST, load, locate
from fmlab.errors import ConfigError, FmlabError
from fmlab.evaluation.complexity import count_macs
from fmlab.io import make_dir
from fmlab.runs import RunDir, StudyDir
from fmlab.study.plan import Trial, plan, searched_split, with_tuned
from fmlab.study.progress import Progress, duration

EXECUTORS = ("local", "dask")


def cached_data(data_dir: str | None) -> FashionMNIST:
    """The data set, read once per process for the trials a worker runs; cached by the folder it is found in
    (and its files' sizes and times), so that a changed $FMLAB_DATA_DIR or file is never served stale."""
    folder = locate(data_dir).path
    stamp = tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(folder.iterdir()) if f.is_file())
    return _read(data_dir, str(folder), stamp)


@functools.lru_cache(maxsize=2)
def _read(data_dir: str | None, folder: str, stamp: tuple[tuple[str, int, int], ...]) -> FashionMNIST:
    return load(data_dir)


def is_done(run: RunDir, key: str) -> bool:
    if run.problem(key, evaluated=True) is not None:
        return False
    try:
        return run.read_done().get("key") == key
    except FmlabError:
        return False


def resumable(run: RunDir, key: str) -> bool:
    """Whether `run` holds saved epochs of exactly this trial."""
    try:
        return run.has_state() and run.read_spec()[1] == key and bool(run.read_state(key))
    except FmlabError:
        return False


def run_trial(spec: dict[str, Any], run_dir: str, key: str, data_dir: str | None, evaluate: dict[str, Any],
              device: str) -> dict[str, Any]:
    """Train and evaluate one trial unless it is done; return its done record (key, status, wall time)."""
    from fmlab.evaluation import evaluate_run
    from fmlab.training.fit import fit

    run = RunDir(run_dir)
    if is_done(run, key):
        return run.read_done()
    config = TrainConfig.model_validate(spec)
    data = cached_data(data_dir)
    t0 = time.perf_counter()
    if models.get(config.model).numpy:  # the study's device is for the torch models; the NumPy one has the CPU
        device = "cpu"
    result = fit(config, run, data=data, device=device, resume=resumable(run, key), force=True, progress=False)
    if result.key != key:
        raise FmlabError(f"{run}: the trial's key changed while it ran ({key} -> {result.key}); run the study again")
    evaluate_run(run, data=data, **evaluate)
    record = {"key": key, "status": result.status, "wall_s": time.perf_counter() - t0}
    run.mark_done(record)
    return record


def longest_first(trials: list[Trial], n_train: int) -> list[Trial]:
    """`trials` by their training work (epochs x images x multiply-adds per image), most first: the short ones
    then fill the last gaps beside the long ones instead of a long one running alone at the end. `n_train`:
    the images of the official training set, which a trial's validation split comes out of."""

    def work(t: Trial) -> int:
        images = t.spec.train_size or n_train - t.spec.val_size
        return t.spec.epochs * images * count_macs(models.build(t.spec.model, **t.spec.model_args))

    return sorted(trials, key=work, reverse=True)


def _local(jobs: list[tuple[Any, ...]], on_start: Callable[[int], None],
           on_done: Callable[[int, dict[str, Any]], None]) -> None:
    """Trials one after another in this process; when some train with fewer threads than the machine has cores,
    as many at a time as their threads fit the cores, in worker processes (a trial's numbers depend on its
    own thread count, not on what runs beside it)."""
    cores = os.cpu_count() or 1
    threads = [min(job[0]["threads"], cores) for job in jobs]
    if all(t == cores for t in threads):
        for i, job in enumerate(jobs):
            on_start(i)
            on_done(i, run_trial(*job))
        return
    finished: queue.Queue = queue.Queue()
    pending, free, running = list(range(len(jobs))), cores, 0
    with multiprocessing.get_context("spawn").Pool(cores) as pool:  # leaving the block stops the workers
        while pending or running:
            for i in list(pending):  # start every waiting trial whose threads fit the free cores
                if threads[i] <= free:
                    on_start(i)
                    pool.apply_async(run_trial, jobs[i], callback=lambda record, i=i: finished.put((i, record, None)),
                                     error_callback=lambda exc, i=i: finished.put((i, None, exc)))
                    pending.remove(i)
                    free, running = free - threads[i], running + 1
            i, record, exc = finished.get()
            if exc is not None:
                raise exc
            free, running = free + threads[i], running - 1
            on_done(i, record)


def _dask(jobs: list[tuple[Any, ...]], scheduler: str, on_done: Callable[[int, dict[str, Any]], None]) -> None:
    from fmlab.cluster import dask_client

    with dask_client(scheduler) as client:
        from dask.distributed import as_completed

        futures = {client.submit(run_trial, *job, pure=False): i for i, job in enumerate(jobs)}
        for future in as_completed(futures):
            on_done(futures[future], future.result())


def run_study(
    study: StudyConfig | str | Path,
    out: str | Path,
    *,
    executor: str = "local",
    scheduler: str = "local:2",
    data_dir: str | None = None,
    device: str | None = None,
    report: bool = True,
    track: str | None = None,
    log: Callable[[str], None] = print,
    status: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Plan, run (skipping finished trials), summarise and (with `report`) compare the best variants and write
    the report; `device` overrides the study's, `track` (an MLflow tracking URI) its [track] table's. `log` gets
a line per event, `status` (for a terminal) a one-line progress bar whenever a trial starts or finishes."""
    from fmlab.evaluation.comparison import compare_runs
    from fmlab.study.report import write_progress
    from fmlab.study.summary import summarise

    study = study if isinstance(study, StudyConfig) else load_study(study)
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor '{executor}'; use local or dask")
    trials = plan(study)
    layout = StudyDir(out)
    data = cached_data(str(data_dir) if data_dir else None)
    make_dir(layout.path)
    layout.write_study(study)  # as written; the tuned variants are read off the search summary beside it
    start = time.perf_counter()
    if study.tune is not None:  # first: its best settings become each searched family's tuned variant
        from fmlab.tune import run_tune_section

        searches = run_tune_section(searched_split(study), layout, data, log)
        trials = plan(study, searches)
        study = with_tuned(study, searches)
    tune_s = time.perf_counter() - start
    trials = longest_first(trials, len(data.y_train))
    evaluate = study.evaluate.model_dump()
    jobs = [
        (t.spec.model_dump(mode="json"), str(layout.trial(t.family, t.variant, t.seed).path), t.key(data.checksums),
         str(data_dir) if data_dir else None, {**evaluate, "figures": False},
         device or study.device)
        for t in trials
    ]
    done = {i for i, job in enumerate(jobs) if is_done(RunDir(job[1]), job[2])}
    skipped = len(done)
    uri = track or (study.track.uri if study.track else None)
    tracker = None
    if uri:
        from fmlab.study.track import Tracker

        tracker = Tracker(uri, study, layout, log)
        for i in sorted(done):  # finished before tracking was on, or before a failure of the server
            tracker.trial(trials[i], RunDir(jobs[i][1]))
    log(f"{study.name}: {len(trials)} trials, {skipped} already done, executor {executor}")
    progress = Progress(trials, done)
    t0 = time.perf_counter()

    def on_start(i: int) -> None:
        progress.started(i)
        if status is not None:
            status(progress.bar(time.perf_counter() - t0))

    def on_done(i: int, record: dict[str, Any]) -> None:
        elapsed = time.perf_counter() - t0
        log(progress.finished(i, record, elapsed))
        if status is not None:
            status(progress.bar(elapsed))
        if report:
            left = progress.eta(elapsed)
            write_progress(layout.path, study, trials, progress.done, None if left is None else duration(left))
        if tracker is not None:
            tracker.trial(trials[i], RunDir(jobs[i][1]))

    if executor == "local":
        _local(jobs, on_start, on_done)
    else:
        _dask(jobs, scheduler, on_done)
    stages = {"trials_s": time.perf_counter() - t0}
    summary = summarise(study, layout, wall_s=stages["trials_s"], reused=skipped)
    stages["summary_s"] = time.perf_counter() - t0 - sum(stages.values())
    if report:
        from fmlab.study.report import write_report

        best = summary["best"]
        best_runs = [layout.trial(fam, variant, study.seeds[0]) for fam, variant in best.items()]
        # another seed of each model: how alike one model's explanations are with itself, to read two models'
        # agreement against
        references = {i: layout.trial(fam, variant, study.seeds[1]) for i, (fam, variant) in enumerate(best.items())
                      } if len(study.seeds) > 1 else None
        # what the report shows of each family's best variant (figures, explanations, robustness), drawn once
        compare_runs(best_runs, layout.comparison.path, data=data, figures=True, references=references,
                     names=list(best), **evaluate)
        stages["comparison_s"] = time.perf_counter() - t0 - sum(stages.values())
        write_report(layout.path)
        stages["report_s"] = time.perf_counter() - t0 - sum(stages.values())
    stages["tune_s"], stages["total_s"] = tune_s, time.perf_counter() - start
    layout.write_timings({**stages, "trials": len(trials), "skipped": skipped})
    if tracker is not None:
        tracker.finish()
    log(f"done in {stages['total_s']:.0f}s: {layout.report}")
    return {**summary, "timings": stages, "report": str(layout.report)}
