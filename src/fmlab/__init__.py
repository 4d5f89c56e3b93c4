"""fmlab: reproducible comparative studies of image classifiers on Fashion-MNIST.

The public API (fmlab.api, importable from here):

    import fmlab
    data = fmlab.load_data()                    # verified Fashion-MNIST
    run = fmlab.train("cnn", epochs=2, out="runs/my-cnn")
    run.evaluate()["accuracy"], run.predict(["shoe.jpg"])
    study = fmlab.run_study("configs/quick.toml")  # a Study: results with CIs and the findings
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fmlab.version import __version__ as __version__

__all__ = [
    "Run", "Study", "compare", "describe_data", "evaluate", "export", "list_models", "load_data", "open_run",
    "open_study", "predict", "recipe", "run_study", "study_status", "train", "tune_grid", "tune_optuna",
]

if TYPE_CHECKING:
    from fmlab.api import (
        Run,
        Study,
        compare,
        describe_data,
        evaluate,
        export,
        list_models,
        load_data,
        open_run,
        open_study,
        predict,
        recipe,
        run_study,
        study_status,
        train,
        tune_grid,
        tune_optuna,
    )


def __getattr__(name: str) -> Any:
    # the API is imported on first use, so `fmlab --version` and light imports stay quick
    if name in __all__:
        from fmlab import api

        return getattr(api, name)
    raise AttributeError(f"module 'fmlab' has no attribute {name!r}")
