"""The run object: one resolved spec, one run folder layout, one predictor.

`resolve` is the one merge of a run's settings; `RunDir` / `StudyDir` the one place that knows a run's
and a study's files; `Predictor` the one model + normalisation + test-time averaging that everything
scoring or serving a model uses.
"""

from fmlab.runs.predictor import Predictor, PredictorModule
from fmlab.runs.rundir import (
    ComparisonDir,
    EvalDir,
    Predictions,
    RunDir,
    RunDirError,
    StudyDir,
    check_output,
    images_digest,
    open_predictor,
)
from fmlab.runs.spec import code_version, is_resolved, require_resolved, resolve, run_key

__all__ = [
    "ComparisonDir", "EvalDir", "Predictions", "Predictor", "PredictorModule", "RunDir", "RunDirError", "StudyDir",
    "check_output", "code_version", "images_digest", "is_resolved", "open_predictor", "require_resolved", "resolve",
    "run_key",
]
