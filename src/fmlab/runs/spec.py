"""The resolved spec of a run: the one merge of field defaults, model recipe, study layers and flags.

    spec = resolve([("defaults", study.defaults), ("families.cnn.baseline", {...}), ("options", flags)])

Layers are given lowest first; a later layer's keys win (`model_args` is merged key by key, and
`dropout` is the model's `dropout` argument). Under them lies the model's registered recipe, and under
that the TrainConfig field defaults. A recipe applies as coherent groups: if the layers switch a
group (choose another optimiser; turn augmentation or flips off), none of that group comes from the
recipe, so a config never mixes the recipe's AdamW decay into SGD, or flip test-time averaging into
training without flips. The result is complete (every model argument, the thread count, the precision) and
round-trips through JSON exactly: resuming a run is `saved spec == resolved spec`, nothing else.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from fmlab import hardware, models
from fmlab.config import TrainConfig, validate
from fmlab.errors import ConfigError
from fmlab.models.registry import check_dropout
from fmlab.version import __version__

GROUPS = {
    "optimizer": ("optimizer", "lr", "weight_decay", "momentum", "nesterov", "schedule", "step_size", "gamma",
                  "warmup"),
    "augmentation": ("augment", "flip", "alternate_flip", "crop", "rotate", "erase", "tta_flip", "tta_shift"),
}
SWITCHES = {"optimizer": ("optimizer",), "augmentation": ("augment", "flip")}
# "this machine's" thread count, read once: a run that sets its own threads must not change what the next
# spec resolved in the same process defaults to
MACHINE_THREADS = torch.get_num_threads()
Layer = tuple[str, Mapping[str, Any] | None]


def _check_layer(source: str, layer: Mapping[str, Any]) -> dict[str, Any]:
    """One layer's keys and values, checked on their own so an error names the layer it is in."""
    layer = dict(layer)
    dropout = layer.pop("dropout", None)
    args = layer.get("model_args", {})
    if not isinstance(args, dict):
        raise ConfigError(f"{source}: model_args must be a table of model arguments, got {args!r}")
    validate(TrainConfig, layer, source)
    if dropout is not None:
        try:
            check_dropout(dropout)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        layer["model_args"] = {**args, "dropout": dropout}
    return layer


def _full_args(name: str, args: dict[str, Any], source: str) -> dict[str, Any]:
    try:
        return models.full_args(name, args)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _field_default(key: str) -> Any:
    return TrainConfig.model_fields[key].get_default(call_default_factory=True)


def resolve(layers: Sequence[Layer]) -> TrainConfig:
    """The full settings of a run from its layers (lowest first), the model's recipe and field defaults."""
    checked = [(source, _check_layer(source, layer or {})) for source, layer in layers]
    user: dict[str, Any] = {}
    for _, layer in checked:
        user.update({k: v for k, v in layer.items() if k != "model_args"})
    name = user.get("model", _field_default("model"))
    source = layers[-1][0] if layers else "config"
    try:
        spec = models.get(name)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    args: dict[str, Any] = {}
    for where, layer in checked:
        if "model_args" in layer:  # each layer's arguments on their own first, so an error names its layer
            _full_args(name, layer["model_args"], where)
            args.update(layer["model_args"])
    full_args = _full_args(name, args, source)
    recipe = dict(spec.recipe)
    grouped = {key for keys in GROUPS.values() for key in keys}
    merged = {k: v for k, v in recipe.items() if k not in grouped}
    for group, keys in GROUPS.items():
        kept = all(user.get(s, recipe.get(s, _field_default(s))) == recipe.get(s, _field_default(s))
                   for s in SWITCHES[group])
        if kept:
            merged.update({k: recipe[k] for k in keys if k in recipe})
    merged.update(user)
    merged["model"] = name
    merged["model_args"] = json.loads(json.dumps(full_args))  # tuples -> lists: what a saved spec reads back
    merged.setdefault("threads", MACHINE_THREADS)
    merged.setdefault("precision", "fp32" if spec.numpy or not hardware.fast_bf16() else "bf16")
    config = validate(TrainConfig, merged, source)
    if spec.numpy and config.precision != "fp32":
        raise ConfigError(f"{source}: '{name}' computes in NumPy float32; it has no bf16 precision")
    # alternate_flip only schedules flip training; tta_flip needs it because Fashion-MNIST footwear always faces
    # left, so a model never trained on mirrors misreads them
    for field in ("tta_flip", "alternate_flip"):
        if getattr(config, field) and not (config.augment and config.flip):
            raise ConfigError(f"{source}: {field} needs training on flipped images: set augment = true and flip = true")
    if config.tta_shift and not (config.augment and config.crop):
        raise ConfigError(f"{source}: tta_shift needs training on shifted images: set augment = true and crop >= 1")
    return config


def is_resolved(spec: TrainConfig) -> bool:
    """Whether `spec` came from resolve (or a saved resolved spec): every model argument and the threads set."""
    return (spec.threads is not None and spec.precision is not None
            and set(spec.model_args) == set(models.get(spec.model).defaults))


def require_resolved(spec: TrainConfig) -> TrainConfig:
    if not is_resolved(spec):
        raise ValueError("training needs a resolved spec: build it with fmlab.runs.resolve")
    return spec


def code_files() -> list[Path]:
    """The source files a run's numbers depend on: settings, data, models, the training engine, the run object."""
    root = Path(__file__).parents[1]
    packages = ("data", "models", "training", "runs")
    return sorted([root / "config.py", *(p for d in packages for p in root.glob(f"{d}/*.py"))])


def code_version() -> str:
    """fmlab's version plus a hash of the code a run's numbers depend on."""
    digest = hashlib.sha256(__version__.encode())
    for path in code_files():
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def run_key(spec: TrainConfig, data_checksums: Mapping[str, str]) -> str:
    """Content address of a run's inputs: resolved spec, data and code version."""
    blob = json.dumps({"spec": spec.model_dump(mode="json"), "data": dict(data_checksums), "code": code_version()},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
