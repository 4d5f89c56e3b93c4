"""The schemas of every file and option fmlab reads: a training run's settings, a study, its searches.

Each field carries its type, bounds and a one-line description, so validation errors, `--help` and
the docs come from one place. Types are strict (no `true` or `'1'` for a number) and numbers finite.
A TrainConfig holds settings; `fmlab.runs.resolve` is the one place that fills in what a config
leaves unset (field defaults, the model's recipe, the model's registered arguments).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fmlab.errors import ConfigError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
SEED = Field(0, ge=0, le=2**32 - 1, description="Seed of the weights, batches, dropout and augmentation.")
Device = Literal["auto", "cpu", "cuda", "mps"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False)


class TrainConfig(Strict):
    """Everything a training run depends on; the same settings give the same numbers on the same CPU."""

    model: str = Field("mlp", description="Registered model name (fmlab models lists them).")
    model_args: dict[str, Any] = Field(default_factory=dict, description="Arguments of the model's builder.")
    optimizer: Literal["sgd", "adam", "adamw"] = Field("adamw", description="Optimiser.")
    lr: float = Field(1e-3, gt=0, le=10, description="Learning rate (the peak rate with a one-cycle schedule).")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum.")
    nesterov: bool = Field(False, description="Nesterov momentum (SGD).")
    batch_size: int = Field(128, ge=1, le=65536, description="Images per training step.")
    epochs: int = Field(10, ge=1, le=1000, description="Passes over the training split.")
    weight_decay: float = Field(0.0, ge=0, le=10, description="The optimiser's weight decay (decoupled for AdamW).")
    l1: float = Field(0.0, ge=0, le=100, description="L1 penalty on weight matrices and kernels, added to the loss.")
    l2: float = Field(0.0, ge=0, le=100, description="L2 penalty on weight matrices and kernels, added to the loss.")
    schedule: Literal["none", "step", "cosine", "onecycle", "plateau"] = Field("none", description="LR schedule.")
    step_size: int = Field(5, ge=1, le=1000, description="Epochs between steps of the step schedule.")
    gamma: float = Field(0.1, gt=0, le=1, description="LR factor of the step and plateau schedules.")
    warmup: float = Field(0.25, gt=0, lt=1, description="Share of the steps the one-cycle schedule spends "
                          "warming up to lr before it anneals.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing of the cross-entropy loss.")
    augment: bool = Field(False, description="Augment training batches (crop, flip, rotate, erase below).")
    crop: int = Field(2, ge=0, le=8, description="Random-crop padding in pixels (0: no crop).")
    flip: bool = Field(True, description="Random horizontal flips.")
    alternate_flip: bool = Field(False, description="Derandomised flips: each image mirrored in every other epoch "
                                                    "(a random half in the first) instead of by a coin each epoch.")
    rotate: float = Field(0.0, ge=0, le=45, description="Largest random rotation in degrees.")
    erase: float = Field(0.0, ge=0, le=1, description="Probability of random erasing: a rectangle of 2-40% of the "
                                                       "image filled with random pixels.")
    tta_flip: bool = Field(False, description="Average predictions over the image and its mirror (needs flips).")
    tta_shift: bool = Field(False, description="Also average over the image shifted one pixel down-right and one "
                                               "up-left (needs crop training).")
    early_stopping: int | None = Field(None, ge=1, le=1000, description="Stop after this many epochs without gain.")
    monitor: Literal["val_acc", "val_loss"] = Field("val_acc", description="What early stopping watches.")
    val_size: int = Field(5000, ge=1, description="Validation images held out of the official training set.")
    train_size: int | None = Field(None, ge=1, description="Train on a stratified subset of this size.")
    split_seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed of the train/validation split.")
    seed: int = SEED
    precision: Literal["fp32", "bf16"] | None = Field(
        None, description="Training arithmetic: bf16 autocast (fp32 weights, loss and normalisation statistics) or "
                          "fp32; default bf16 where it pays (a CUDA GPU, a CPU with AMX-BF16 or AVX512-BF16), "
                          "else fp32.")
    channels_last: bool = Field(True, description="Channels-last memory format for CNNs on the CPU.")
    threads: int | None = Field(None, ge=1, le=1024, description="Intra-op threads (default: this machine's).")


def check_name(kind: str, name: object) -> str:
    """Names that become folder names are identifiers: letters, digits, '-' and '_', at most 64 characters."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(f"{kind} name {name!r} must be letters, digits, '-' or '_' (at most 64, not starting "
                          "with '-' or '_'): it names a folder")
    return name


def _identifier(kind: str, name: str) -> str:
    try:
        return check_name(kind, name)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    # keys that are not plain names (a family called "..") are quoted, so the path reads unambiguously
    where = ".".join(str(p) if re.fullmatch(r"[\w-]+", str(p)) else repr(p) for p in err["loc"]) or "config"
    if err["type"] == "extra_forbidden":
        return f"unknown key '{where}'"
    if err["type"] == "value_error":  # our own validators name the value
        return f"{where}: {err['msg'].removeprefix('Value error, ')}"
    got = repr(err.get("input"))
    return f"{where}: {err['msg']} (got {got if len(got) <= 80 else got[:77] + '...'})"


def validate(cls: type[Strict], data: Any, source: str = "config") -> Any:
    """Build `cls` from `data`, turning the first validation error into a one-line ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a table of settings, got {data!r}")
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_first_error(exc)}") from None


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not a valid TOML file ({exc})") from None


class FamilyConfig(Strict):
    """A model family: a baseline and up to 5 named variants overriding training settings."""

    model: str = Field(description="Registered model name.")
    title: str = Field("", description="Name shown in the report.")
    baseline: dict[str, Any] = Field(default_factory=dict, description="Settings of the baseline.")
    variants: dict[str, dict[str, Any]] = Field(default_factory=dict, max_length=5,
                                                description="Variant name -> settings changed from the baseline.")

    @field_validator("variants")
    @classmethod
    def _variant_names(cls, variants: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name in variants:
            _identifier("variant", name)
        return variants


class CompareConfig(Strict):
    """A pair to test: 'family' (its best variant) or 'family/variant'."""

    a: str
    b: str
    title: str = ""


class EvaluateConfig(Strict):
    """How each trial is evaluated."""

    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed choosing the images shown in heatmaps.")
    timing_s: float = Field(0.5, gt=0, le=60, description="Seconds spent timing inference per model.")


class SearchBudget(Strict):
    train_size: int | None = Field(None, ge=1, description="Images searched besides the validation split.")
    val_size: int = Field(5000, ge=1, description="Validation images.")
    epochs: int = Field(5, ge=1, le=1000, description="Epochs per fit.")
    seed: int = SEED
    device: Device = "cpu"


class GridSection(SearchBudget):
    """A scikit-learn grid search: the same grid for every model named."""

    models: list[str] = Field(min_length=1)
    params: dict[str, list[Any]] = Field(min_length=1)
    cv: int | Literal["holdout"] = Field(3, description="Folds (2 to 100), or 'holdout' for the validation split.")
    halving: bool = False
    executor: Literal["local", "dask"] = "local"
    scheduler: str | None = None


class OptunaSection(SearchBudget):
    """An Optuna TPE search with pruning."""

    model: str
    trials: int = Field(20, ge=1, le=100_000)
    storage: str | None = None
    study_name: str | None = None
    pruner: Literal["median", "hyperband", "none"] = "median"
    timeout: float | None = Field(None, gt=0)
    space: str | dict[str, Any] | None = None
    sampler_seed: int | None = Field(None, ge=0, le=2**32 - 1)


class TuneConfig(Strict):
    """A study's [tune] table: a grid search, an Optuna search, or both."""

    grid: GridSection | None = None
    optuna: OptunaSection | None = None


class TrackConfig(Strict):
    """A study's [track] table: where MLflow tracking goes (not part of what a trial is)."""

    uri: str = Field(min_length=1, max_length=2000, description="MLflow tracking URI: http(s)://, file:, sqlite:")
    experiment: str | None = Field(None, min_length=1, max_length=200, description="Default: the study's name.")


class StudyConfig(Strict):
    name: str = "study"
    description: str = ""
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    device: Device = Field("auto", description="Where the trials train (not part of what a trial is).")
    defaults: dict[str, Any] = Field(default_factory=dict, description="Settings of every trial.")
    families: dict[str, FamilyConfig] = Field(min_length=1)
    compare: list[CompareConfig] = Field(default_factory=list)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    tune: TuneConfig | None = None
    track: TrackConfig | None = None

    @field_validator("name")
    @classmethod
    def _study_name(cls, name: str) -> str:
        return _identifier("study", name)

    @field_validator("families")
    @classmethod
    def _family_names(cls, families: dict[str, FamilyConfig]) -> dict[str, FamilyConfig]:
        for name in families:
            _identifier("family", name)
        return families

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError("seeds must be distinct")
        if any(not 0 <= s <= 2**32 - 1 for s in seeds):
            raise ValueError("seeds must be between 0 and 2**32 - 1")
        return seeds


def load_study(path: str | Path) -> StudyConfig:
    return validate(StudyConfig, read_toml(path), str(path))
