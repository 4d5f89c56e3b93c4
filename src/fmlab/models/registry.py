"""Model registry (timm-like): each family file registers its builders, with defaults next to the definition.

Every model maps a normalised (N, 1, 28, 28) float batch to (N, 10) logits and accepts `dropout`
(0 <= p < 1), so a study can vary dropout uniformly. Builders validate their arguments with the
helpers below and raise ConfigError on a bad value; `build` rejects unknown argument names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn

from fmlab.errors import ConfigError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., nn.Module]
    defaults: dict[str, Any]
    description: str
    # post-activation feature maps an explanation may read, highest resolution first (() for non-CNNs); which
    # layer and method explain a trained model is measured per run (fmlab.evaluation.trust)
    explain_layers: tuple[str, ...]
    # (method, layer) measured most faithful on the default study (README), for overlays of runs that have not
    # been explained themselves (fmlab evaluate chooses per run); None for non-CNNs
    explainer: tuple[str, str] | None
    family: str  # "linear" | "ffnn" | "cnn"
    numpy: bool = False  # trained by the NumPy engine (fmlab.models.mlp_numpy); `builder` gives its torch twin
    recipe: dict[str, Any] = field(default_factory=dict)  # training settings for this model (fmlab.runs.resolve)


B = TypeVar("B", bound=Callable[..., nn.Module])
_REGISTRY: dict[str, ModelSpec] = {}
FAMILIES = ("linear", "ffnn", "cnn")
MAX_PARAMETERS = 50_000_000  # 200 MB of float32 weights: far above any Fashion-MNIST model worth training


def register(
    name: str,
    *,
    defaults: dict[str, Any],
    description: str,
    explain_layers: tuple[str, ...] = (),
    explainer: tuple[str, str] | None = None,
    family: str,
    numpy: bool = False,
    recipe: dict[str, Any] | None = None,
) -> Callable[[B], B]:
    """Decorator for a builder (function or nn.Module class): register `builder(**defaults)` under `name`.

    `defaults` are the network the name stands for; `recipe` holds the model's measured training recipe:
    training settings (no model arguments) used unless a config sets them.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    if "dropout" not in defaults:
        raise ValueError(f"model '{name}' must accept a 'dropout' argument")

    def decorator(builder: B) -> B:
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' is already registered")
        _REGISTRY[name] = ModelSpec(
            name, builder, dict(defaults), description, tuple(explain_layers), explainer, family, numpy,
            dict(recipe or {})
        )
        return builder

    return decorator


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown model '{name}'; choose one of: {', '.join(names())}") from None


def recipe(name: Any) -> dict[str, Any]:
    """The registered training recipe of `name`; {} for an unknown name (validation reports it later)."""
    spec = _REGISTRY.get(name) if isinstance(name, str) else None
    return dict(spec.recipe) if spec else {}


def full_args(name: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The registered defaults of `name` updated with `overrides`, checked by building the network on the
    meta device (nothing is allocated): a bad value or an oversized network is a ConfigError."""
    spec = get(name)
    unknown = sorted(set(overrides) - set(spec.defaults))
    if unknown:
        raise ConfigError(
            f"model '{name}' has no argument {', '.join(repr(k) for k in unknown)}; "
            f"valid arguments: {', '.join(sorted(spec.defaults))}"
        )
    args = {**spec.defaults, **overrides}
    try:
        with torch.device("meta"):
            size = count_parameters(spec.builder(**args))
    except ConfigError:
        raise
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"model '{name}': arguments {args} do not build a network ({exc})") from None
    if size > MAX_PARAMETERS:
        raise ConfigError(f"model '{name}' with {args} has {size:,} parameters, over fmlab's limit of "
                          f"{MAX_PARAMETERS:,}; choose smaller layers")
    return args


def build(name: str, **overrides: Any) -> nn.Module:
    """A fresh model: the registered defaults updated with `overrides` (checked first, see full_args)."""
    return get(name).builder(**full_args(name, overrides))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# Argument checks shared by the builders: each returns the clean value or raises ConfigError.


def check_dropout(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ConfigError(f"dropout must be a number in [0, 1), got {value!r}")
    return float(value)


def check_positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key} must be a positive integer, got {value!r}")
    return value


def check_positive_ints(key: str, value: Any, length: int | None = None) -> tuple[int, ...]:
    """A list/tuple of positive integers (of exactly `length` items when given)."""
    ok = isinstance(value, Sequence) and not isinstance(value, str) and (length is None or len(value) == length)
    if not ok or not value or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
        size = f"{length} " if length else ""
        raise ConfigError(f"{key} must be a list of {size}positive integers; got {value!r}")
    return tuple(value)


def check_choice(key: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ConfigError(f"{key} must be one of: {', '.join(choices)}; got {value!r}")
    return value


class Dropout(nn.Dropout):
    """Inverted dropout whose CPU mask comes from 16-bit random integers instead of torch's CPU bernoulli_,
    which draws one double per element and dominated the torch FFNN's training step (README, "Performance").
    The drop rate is p rounded to a multiple of 1/32768, kept exact by the scale. Evaluation and other
    devices use nn.Dropout unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return super().forward(x)
        dropped = round(self.p * 32768)
        keep = torch.empty(x.shape, dtype=torch.int16).random_() >= dropped
        return x.mul(keep).mul_(32768 / (32768 - dropped))


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


def make_activation(name: Any) -> nn.Module:
    """A fresh activation module (one per use, so Grad-CAM hooks see a single output)."""
    return ACTIVATIONS[check_choice("activation", name, list(ACTIVATIONS))]()
