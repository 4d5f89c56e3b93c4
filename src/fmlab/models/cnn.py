"""Custom CNNs: `simple-cnn`, deliberately smaller than LeNet-5, and `cnn`, the 3-conv-block network.

simple-cnn: conv 4@5x5 (padding 2) -> relu -> max pool -> conv 8@5x5 -> relu -> max pool -> dropout ->
FC 10. Fewer filters (4+8 vs 6+16), fewer layers (one FC vs three) and ~1/20 of LeNet-5's parameters.

cnn: three blocks of conv 3x3 (padding 1, no bias) + BatchNorm + ReLU + max pool 2x2
(28 -> 14 -> 7 -> 3), then FC `hidden` + ReLU + dropout -> 10.

Grad-CAM explains the activation output of the last convolution (before its pooling).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn

from fmlab.models.registry import check_dropout, check_positive_int, check_positive_ints, make_activation, register


@register(
    "simple-cnn",
    defaults={"channels": (4, 8), "activation": "relu", "dropout": 0.0},
    description="Small custom CNN, strictly smaller than LeNet-5: conv 4@5x5, pool, conv 8@5x5, pool, FC 10.",
    target_layer="features.act2",
    family="cnn",
)
class SimpleCNN(nn.Module):
    def __init__(self, channels: Sequence[int], activation: str, dropout: float) -> None:
        super().__init__()
        c1, c2 = check_positive_ints("channels", channels, length=2)
        self.features = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(1, c1, 5, padding=2),  # c1 x 28 x 28
                act1=make_activation(activation),
                pool1=nn.MaxPool2d(2),  # c1 x 14 x 14
                conv2=nn.Conv2d(c1, c2, 5),  # c2 x 10 x 10
                act2=make_activation(activation),
                pool2=nn.MaxPool2d(2),  # c2 x 5 x 5
            )
        )
        self.classifier = nn.Sequential(
            OrderedDict(flatten=nn.Flatten(), drop=nn.Dropout(check_dropout(dropout)), out=nn.Linear(c2 * 5 * 5, 10))
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            bn=nn.BatchNorm2d(c_out),
            act=nn.ReLU(),
            pool=nn.MaxPool2d(2),
        )
    )


@register(
    "cnn",
    defaults={"channels": (32, 64, 128), "hidden": 128, "dropout": 0.4},
    description="3 conv blocks (conv3x3 + BatchNorm + ReLU + max pool; 32-64-128), FC 128, dropout, 10.",
    target_layer="features.block3.act",
    family="cnn",
)
class CNN(nn.Module):
    def __init__(self, channels: Sequence[int], hidden: int, dropout: float) -> None:
        super().__init__()
        c1, c2, c3 = check_positive_ints("channels", channels, length=3)
        hidden = check_positive_int("hidden", hidden)
        self.features = nn.Sequential(
            OrderedDict(block1=conv_block(1, c1), block2=conv_block(c1, c2), block3=conv_block(c2, c3))
        )
        self.classifier = nn.Sequential(
            OrderedDict(
                flatten=nn.Flatten(),
                fc=nn.Linear(c3 * 3 * 3, hidden),
                act=nn.ReLU(),
                drop=nn.Dropout(check_dropout(dropout)),
                out=nn.Linear(hidden, 10),
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
