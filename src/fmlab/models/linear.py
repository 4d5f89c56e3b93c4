"""`logreg`: softmax regression, the linear baseline (flatten + one affine map to 10 logits).

`dropout` is applied to the input pixels (the only place a linear model has for it); 0 turns it off.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from fmlab.models.registry import Dropout, check_dropout, register


@register(
    "logreg",
    defaults={"dropout": 0.0},
    description="Softmax regression on the 784 pixels (linear baseline); dropout acts on the input.",
    family="linear",
    recipe={"lr": 3e-3, "schedule": "onecycle", "epochs": 3},
)
class LogReg(nn.Sequential):
    def __init__(self, dropout: float) -> None:
        super().__init__(
            OrderedDict(flatten=nn.Flatten(), drop=Dropout(check_dropout(dropout)), fc=nn.Linear(28 * 28, 10))
        )
