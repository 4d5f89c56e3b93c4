"""Run a study's trials once each, locally or on a Dask cluster, into a resumable store.

A trial's directory gets `done.json` (holding the trial's input key) as its very last write,
so a trial is finished exactly when that file exists with the current key. A trial killed
mid-way (kill -9 included) is resumed from its last completed epoch or rerun from scratch;
both give the same numbers because a trial is a pure function of its inputs.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fmlab.config import StudyConfig, TrainConfig, load_study
from fmlab.data import FashionMNIST, load
from fmlab.errors import ConfigError, FmlabError
from fmlab.io import write_json, write_text
from fmlab.study.plan import plan

DONE = "done.json"


@functools.lru_cache(maxsize=2)
def cached_data(data_dir: str | None) -> FashionMNIST:
    return load(data_dir)


def trial_dir(root: Path, family: str, variant: str, seed: int) -> Path:
    return root / "trials" / family / variant / f"seed{seed}"


def is_done(run_dir: Path, key: str) -> bool:
    try:
        return json.loads((run_dir / DONE).read_text())["key"] == key
    except (OSError, ValueError, KeyError):
        return False


def run_trial(config: dict[str, Any], run_dir: str, key: str, data_dir: str | None = None,
              evaluate: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train and evaluate one trial unless its result for `key` already exists; return its done record."""
    from fmlab.evaluate import evaluate_run
    from fmlab.train.loop import fit

    out = Path(run_dir)
    if is_done(out, key):
        return json.loads((out / DONE).read_text())
    cfg = TrainConfig.model_validate(config)
    data = cached_data(data_dir)
    saved = out / "config.json"
    resume = (out / "last.pt").is_file() and saved.is_file() and _same_config(saved, cfg)
    if not resume and out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    fit(cfg, out, data=data, resume=resume, progress=False)
    evaluation = evaluate_run(out, data=data, **(evaluate or {}))
    record = {"key": key, "status": evaluation.get("status", "finished"), "wall_s": time.perf_counter() - t0}
    write_json(out / DONE, record)
    return record


def _same_config(path: Path, cfg: TrainConfig) -> bool:
    saved = json.loads(path.read_text())
    return {k: saved.get(k) for k in cfg.model_dump() if k != "model_args"} == {
        k: v for k, v in cfg.model_dump().items() if k != "model_args"
    }


def _local(jobs: list[tuple[Any, ...]], on_done: Callable[[int, dict[str, Any]], None]) -> None:
    for i, job in enumerate(jobs):
        on_done(i, run_trial(*job))


def _dask(jobs: list[tuple[Any, ...]], scheduler: str, on_done: Callable[[int, dict[str, Any]], None]) -> None:
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise FmlabError("--executor dask needs the cluster extra: pip install 'fmlab[cluster]'") from None
    if scheduler.startswith("local:"):
        n = scheduler.partition(":")[2]
        if not n.isdigit() or int(n) < 1:
            raise ConfigError(f"--scheduler local:N needs a worker count, got '{scheduler}'")
        # one task per worker; the cores are shared out as torch threads (Dask's default is one thread per
        # worker), so local:1 trains with the same thread count, and so the same numbers, as --executor local
        threads = str(max(1, (os.cpu_count() or 1) // int(n)))
        cluster = LocalCluster(n_workers=int(n), threads_per_worker=1, processes=True, dashboard_address=None,
                               env={"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads})
        client = Client(cluster)
    else:
        try:
            client, cluster = Client(scheduler, timeout=10), None
        except OSError as exc:
            raise FmlabError(f"cannot reach Dask scheduler {scheduler} ({exc}); start one or use local:N") from None
    try:
        futures = {client.submit(run_trial, *job, pure=False): i for i, job in enumerate(jobs)}
        for future in as_completed(futures):
            on_done(futures[future], future.result())
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def run_study(
    study: StudyConfig | str | Path,
    out: str | Path,
    *,
    executor: str = "local",
    scheduler: str = "local:2",
    data_dir: str | None = None,
    report: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Plan, run (skipping finished trials), summarise and report a study."""
    from fmlab.evaluate.runner import compare_runs
    from fmlab.study.summary import summarise

    source = None if isinstance(study, StudyConfig) else Path(study)
    study = load_study(study) if source else study
    trials = plan(study)
    out = Path(out)
    data = cached_data(str(data_dir) if data_dir else None)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "study.json", study.model_dump_json(indent=2))
    jobs = [
        (t.config.model_dump(), str(trial_dir(out, t.family, t.variant, t.seed)), t.key(data.checksums),
         str(data_dir) if data_dir else None, {"figures": t.seed == study.seeds[0], **study.evaluate})
        for t in trials
    ]
    skipped = sum(is_done(Path(job[1]), job[2]) for job in jobs)
    log(f"{study.name}: {len(trials)} trials, {skipped} already done, executor {executor}")
    t0 = time.perf_counter()

    def on_done(i: int, record: dict[str, Any]) -> None:
        log(f"  [{time.perf_counter() - t0:6.0f}s] {trials[i].name}: {record['status']}")

    if executor == "local":
        _local(jobs, on_done)
    elif executor == "dask":
        _dask(jobs, scheduler, on_done)
    else:
        raise ConfigError(f"unknown executor '{executor}'; use local or dask")
    stages = {"trials_s": time.perf_counter() - t0}
    summary = summarise(study, out, wall_s=stages["trials_s"])
    best_runs = [trial_dir(out, fam, variant, study.seeds[0]) for fam, variant in summary["best"].items()]
    compare_runs(best_runs, out / "comparison", data=data, figures=False)
    stages["summary_and_comparison_s"] = time.perf_counter() - t0 - sum(stages.values())
    if study.tune:
        from fmlab.tune import run_tune_section

        run_tune_section(study.tune, out / "tune", data)
        stages["tune_s"] = time.perf_counter() - t0 - sum(stages.values())
    if report:
        from fmlab.study.report import write_report

        write_report(out)
        stages["report_s"] = time.perf_counter() - t0 - sum(stages.values())
    stages["total_s"] = time.perf_counter() - t0
    write_json(out / "timings.json", {**stages, "trials": len(trials), "skipped": skipped})
    log(f"done in {stages['total_s']:.0f}s: {out / 'report.html'}")
    return {**summary, "timings": stages}
