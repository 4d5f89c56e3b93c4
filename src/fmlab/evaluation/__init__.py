"""Evaluation: metrics, figures, attributions, complexity and statistics for trained runs.

`evaluate_run` and `compare_runs` are imported on first use, so light users (e.g. `fmlab.evaluation.stats`)
do not pay for torch, captum and matplotlib.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fmlab.evaluation.comparison import compare_runs
    from fmlab.evaluation.runner import evaluate_run

__all__ = ["compare_runs", "evaluate_run"]


def __getattr__(name: str) -> Any:
    if name == "compare_runs":
        from fmlab.evaluation.comparison import compare_runs

        return compare_runs
    if name == "evaluate_run":
        from fmlab.evaluation.runner import evaluate_run

        return evaluate_run
    raise AttributeError(f"module 'fmlab.evaluation' has no attribute {name!r}")
