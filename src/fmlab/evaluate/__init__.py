"""Evaluation: metrics, figures, attributions, complexity and statistics for trained runs.

`evaluate_run` and `compare_runs` are imported on first use, so light users (e.g. `fmlab.evaluate.stats`)
do not pay for torch, captum and matplotlib.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fmlab.evaluate.runner import compare_runs, evaluate_run

__all__ = ["compare_runs", "evaluate_run"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from fmlab.evaluate import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'fmlab.evaluate' has no attribute {name!r}")
