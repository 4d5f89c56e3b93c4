"""`mlp`: a feed-forward network in torch, the twin of the from-scratch NumPy network (mlp_numpy.py).

Layout (an nn.Sequential with named layers, so the NumPy network can produce the same state_dict keys):
flatten, then for each hidden size i = 1..k: fc{i} (Linear), act{i}, drop{i}; then out (Linear to 10).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from torch import nn

from fmlab.models.registry import (
    ACTIVATIONS,
    Dropout,
    check_choice,
    check_dropout,
    check_positive_ints,
    make_activation,
    register,
)

# no dropout by default: at the recipe's 10 epochs it cost both accuracy and time per step (README, "Performance")
MLP_DEFAULTS: dict[str, Any] = {"hidden": (512, 256), "activation": "relu", "dropout": 0.0}


def check_mlp_args(hidden: Any, activation: Any, dropout: Any) -> tuple[tuple[int, ...], str, float]:
    """Validated (hidden, activation, dropout), shared with the NumPy network."""
    return (
        check_positive_ints("hidden", hidden),
        check_choice("activation", activation, list(ACTIVATIONS)),
        check_dropout(dropout),
    )


def layer_sizes(hidden: Sequence[int]) -> list[tuple[str, int, int]]:
    """(name, fan_in, fan_out) of every Linear layer, input to output."""
    sizes = [28 * 28, *hidden, 10]
    names = [f"fc{i}" for i in range(1, len(hidden) + 1)] + ["out"]
    return [(name, sizes[i], sizes[i + 1]) for i, name in enumerate(names)]


@register(
    "mlp",
    defaults=MLP_DEFAULTS,
    description="Feed-forward network in torch: hidden Linear layers (512-256) with relu/tanh/gelu, dropout 0 "
    "by default.",
    family="ffnn",
    # the time-to-accuracy recipe (benchmarks/time_to_accuracy.py): batch 512 halves the steps, and its larger
    # matrix products are where bf16 pays (README, "Performance")
    recipe={"epochs": 10, "batch_size": 512, "lr": 3e-3, "schedule": "onecycle", "label_smoothing": 0.1},
)
class MLP(nn.Sequential):
    def __init__(self, hidden: Sequence[int], activation: str, dropout: float) -> None:
        hidden, activation, dropout = check_mlp_args(hidden, activation, dropout)
        layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
        for i, (name, fan_in, fan_out) in enumerate(layer_sizes(hidden), start=1):
            layers[name] = nn.Linear(fan_in, fan_out)
            if name != "out":
                layers[f"act{i}"] = make_activation(activation)
                layers[f"drop{i}"] = Dropout(dropout)
        super().__init__(layers)
