"""How far a study is: trials done of all, elapsed time and an estimate of what is left.

The estimate is read off the trials finished in this run: each remaining trial is expected to take as long as
the finished ones of its family took on average (all finished ones while its family has none), and the sum is
divided by the concurrency seen so far (trial seconds per wall second), so two trials at a time count as such.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from fmlab.errors import FmlabError
from fmlab.runs import RunDir
from fmlab.study.plan import Trial


def duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    def __init__(self, trials: list[Trial], done: set[int]) -> None:
        self.trials, self.done, self.running = trials, set(done), set()
        self.walls: dict[str, list[float]] = defaultdict(list)

    def started(self, i: int) -> None:
        self.running.add(i)

    def bar(self, elapsed: float, width: int = 24) -> str:
        """One line for a terminal: a bar of trials done, the ones running, elapsed time and what is left."""
        filled = round(width * len(self.done) / len(self.trials))
        running = ", ".join(self.trials[i].name for i in sorted(self.running)) or "-"
        left = self.eta(elapsed)
        eta = "" if left is None else f", ~{duration(left)} left"
        return (f"[{'#' * filled}{'.' * (width - filled)}] {len(self.done)}/{len(self.trials)} trials, "
                f"running {running}, {duration(elapsed)} elapsed{eta}")

    def finished(self, i: int, record: dict[str, Any], elapsed: float) -> str:
        """Record trial `i` as finished `elapsed` seconds into the run; the line that says so."""
        self.running.discard(i)
        if i not in self.done:
            self.walls[self.trials[i].family].append(record["wall_s"])
            self.done.add(i)
        left = self.eta(elapsed)
        eta = "" if left is None else f", about {duration(left)} left"
        return (f"  [{len(self.done)}/{len(self.trials)} done, {duration(elapsed)} elapsed{eta}] "
                f"{self.trials[i].name}: {record['status']}")

    def eta(self, elapsed: float) -> float | None:
        everyone = [w for walls in self.walls.values() for w in walls]
        if not everyone or elapsed <= 0:
            return None
        remaining = [t.family for i, t in enumerate(self.trials) if i not in self.done]
        work = sum(statistics.mean(self.walls.get(f) or everyone) for f in remaining)
        return work / (sum(everyone) / elapsed)


def status_lines(trials: list[Trial], runs: list[RunDir], keys: list[str]) -> list[str]:
    """One line per trial (done, partly trained, not started) and a total, without running anything."""
    lines, done, walls = [], 0, []
    for trial, run, key in zip(trials, runs, keys, strict=True):
        problem = run.problem(key, evaluated=True)
        if problem is None:
            record = run.read_done()
            done, state = done + 1, f"done ({record['status']}, {duration(record['wall_s'])})"
            walls.append(record["wall_s"])
        elif not run.path.exists():
            state = "not started"
        else:
            try:
                ours = run.has_state() and run.read_spec()[1] == key
                state = f"{len(run.read_history())} of {trial.spec.epochs} epochs trained" if ours else \
                    f"to train again: {problem}"
            except FmlabError as exc:
                state = f"to train again: {exc}"
        lines.append(f"  {trial.name}: {state}")
    left = "" if not walls else f"; at their mean {duration(statistics.mean(walls))} each, about " \
        f"{duration(statistics.mean(walls) * (len(trials) - done))} of trial time left"
    return [f"{done}/{len(trials)} trials done{left}", *lines]
