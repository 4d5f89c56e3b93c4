"""Custom CNNs: `simple-cnn`, deliberately smaller than LeNet-5, and `cnn`, the 3-conv-block network.

simple-cnn: conv 4@5x5 (padding 2) -> relu -> max pool -> conv 8@5x5 -> relu -> max pool -> dropout ->
FC 10. Fewer filters (4+8 vs 6+16), fewer layers (one FC vs three) and ~1/20 of LeNet-5's parameters.

cnn: three blocks of conv 3x3 (padding 1, no bias) + max pool 2x2 + BatchNorm + ReLU
(16-32-64 channels, 28 -> 14 -> 7 -> 3), then FC 256 + ReLU + dropout (default 0) -> 10. Pooling before
BatchNorm and ReLU (instead of after) normalises and rectifies a quarter of the values, which trains
faster per epoch at no cost in accuracy (README, "Performance"). `convs` gives each block more 3x3
convolutions (conv + BatchNorm + ReLU at full size before the pooled one), for the deeper
best-accuracy preset (configs/best.toml).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn

from fmlab.models.lenet import SMALL_CNN_RECIPE
from fmlab.models.registry import (
    Dropout,
    check_dropout,
    check_positive_int,
    check_positive_ints,
    make_activation,
    register,
)


@register(
    "simple-cnn",
    defaults={"channels": (4, 8), "activation": "relu", "dropout": 0.0},
    description="Small custom CNN, strictly smaller than LeNet-5: conv 4@5x5, pool, conv 8@5x5, pool, FC 10.",
    explain_layers=("features.act1", "features.act2", "features.pool2"),
    explainer=("guided_gradcam", "features.act1"),
    family="cnn",
    recipe=SMALL_CNN_RECIPE,
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
            OrderedDict(flatten=nn.Flatten(), drop=Dropout(check_dropout(dropout)), out=nn.Linear(c2 * 5 * 5, 10))
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def conv_block(c_in: int, c_out: int, convs: int = 1) -> nn.Sequential:
    """`convs` 3x3 convolutions; all but the last with BatchNorm + ReLU at full size, the last pooled first."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i in range(convs - 1):
        layers[f"conv{i}"] = nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1, bias=False)
        layers[f"bn{i}"] = nn.BatchNorm2d(c_out)
        layers[f"act{i}"] = nn.ReLU()
    layers["conv"] = nn.Conv2d(c_in if convs == 1 else c_out, c_out, 3, padding=1, bias=False)
    layers["pool"] = nn.MaxPool2d(2)
    layers["bn"] = nn.BatchNorm2d(c_out)
    layers["act"] = nn.ReLU()
    return nn.Sequential(layers)


@register(
    "cnn",
    defaults={"channels": (16, 32, 64), "convs": (1, 1, 1), "hidden": 256, "dropout": 0.0},
    description="3 conv blocks (conv3x3 + max pool + BatchNorm + ReLU, 16-32-64), FC 256 with dropout (0 in the "
    "recipe: at its budget dropout 0.3 costs accuracy).",
    explain_layers=("features.block1.act", "features.block2.act", "features.block3.act"),
    explainer=("guided_gradcam", "features.block3.act"),
    family="cnn",
    # the time-to-accuracy recipe (benchmarks/time_to_accuracy.py): a large one-cycle rate at batch 512 (fewer,
    # larger steps take less time per image; the rate chosen by measurement) reached over a longer warm-up, AdamW's
    # decoupled decay, and derandomised flips (each image mirrored every other epoch), averaged again at test time
    # (the footwear faces left, so mirrors need training): the flips and the warm-up each bought an epoch at about
    # the same accuracy; no dropout: at this budget it cost accuracy per epoch (README, "Performance")
    recipe={"epochs": 8, "batch_size": 512, "lr": 2e-2, "warmup": 0.35, "weight_decay": 0.05, "schedule": "onecycle",
            "label_smoothing": 0.1, "augment": True, "crop": 0, "alternate_flip": True, "tta_flip": True},
)
class CNN(nn.Module):
    def __init__(self, channels: Sequence[int], convs: Sequence[int], hidden: int, dropout: float) -> None:
        super().__init__()
        widths = check_positive_ints("channels", channels, length=3)
        depths = check_positive_ints("convs", convs, length=3)
        hidden = check_positive_int("hidden", hidden)
        self.features = nn.Sequential(OrderedDict(
            (f"block{i + 1}", conv_block(c_in, c_out, n))
            for i, (c_in, c_out, n) in enumerate(zip((1, *widths[:2]), widths, depths, strict=True))
        ))
        self.classifier = nn.Sequential(
            OrderedDict(
                flatten=nn.Flatten(),
                fc=nn.Linear(widths[2] * 3 * 3, hidden),
                act=nn.ReLU(),
                drop=Dropout(check_dropout(dropout)),
                out=nn.Linear(hidden, 10),
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
