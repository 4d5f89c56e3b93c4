"""Tunable parameter names and values, shared by the grid search and the Optuna search.

A tunable parameter is either a training setting (a TrainConfig key in TRAIN_KEYS) or an argument
of every model searched (e.g. `hidden`, `channels`). Each value is checked the way a training run
would check it, so a bad grid or space fails before any training with one ConfigError line.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from fmlab import models
from fmlab.config import TrainConfig
from fmlab.errors import ConfigError
from fmlab.runs import resolve

# training settings a search may vary: every TrainConfig field but what names the run, its data split and
# its machine, plus `dropout` (the model's dropout argument)
FIXED = ("model", "model_args", "seed", "val_size", "train_size", "split_seed", "early_stopping", "monitor",
         "threads", "precision", "channels_last")
TRAIN_KEYS = (*(k for k in TrainConfig.model_fields if k not in FIXED), "dropout")


def check_param(key: str, model_names: Sequence[str], source: str) -> None:
    """`key` must be a training setting or an argument of every model in `model_names`."""
    if key in TRAIN_KEYS:
        return
    lacking = [m for m in model_names if key not in models.get(m).defaults]
    if lacking:
        args = sorted({a for m in model_names for a in models.get(m).defaults} - {"dropout"})
        raise ConfigError(
            f"{source}: unknown parameter '{key}' for {', '.join(lacking)}; tunable: "
            f"{', '.join(TRAIN_KEYS)}" + (f", model arguments {', '.join(args)}" if args else "")
        )


def check_value(key: str, value: Any, model_names: Sequence[str], source: str) -> None:
    """Raise ConfigError when `value` is not valid for `key` (a training setting or a model argument) for
    every model named: each combination is resolved the way a run would resolve it."""
    setting = {key: value} if key in TRAIN_KEYS else {"model_args": {key: value}}
    for name in model_names:
        resolve([(source, {"model": name, **setting})])


def check_models(model_names: Sequence[str]) -> list[str]:
    """Known model names (ConfigError otherwise), duplicates dropped."""
    if not model_names:
        raise ConfigError("name at least one model to search")
    for name in model_names:
        models.get(name)
    return list(dict.fromkeys(model_names))


def check_grid(grid: dict[str, Sequence[Any]], model_names: Sequence[str], source: str = "grid") -> None:
    """Every name tunable for every model, every list non-empty, every value valid."""
    if not grid:
        raise ConfigError(f"{source}: the grid is empty; give at least one parameter with values")
    for key, values in grid.items():
        check_param(key, model_names, source)
        if isinstance(values, str | bytes) or not isinstance(values, Sequence) or len(values) == 0:
            raise ConfigError(f"{source}: parameter '{key}' needs a non-empty list of values, got {values!r}")
        for value in values:
            check_value(key, value, model_names, f"{source} {key}={value!r}")


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets: '[8,16],[16,32]' -> ['[8,16]', '[16,32]']."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [item.strip() for item in items]


def parse_value(text: str) -> Any:
    """'1e-3' -> 0.001, '64' -> 64, 'true' -> True, '[8,16]' -> [8, 16], 'adam' -> 'adam'."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def parse_param(text: str) -> tuple[str, list[Any]]:
    """`name=v1,v2,...` (a command-line --param) -> (name, [values])."""
    key, sep, values = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--param expects name=v1,v2,..., got '{text}'")
    items = _split_top_level(values)
    if not values.strip() or any(not item for item in items):
        raise ConfigError(f"--param {key}: empty value in '{text}'; give a comma-separated list such as lr=1e-3,1e-2")
    return key, [parse_value(item) for item in items]


def split_params(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(training settings, model arguments) of a flat parameter dict."""
    train = {k: v for k, v in params.items() if k in TRAIN_KEYS}
    return train, {k: v for k, v in params.items() if k not in TRAIN_KEYS}
