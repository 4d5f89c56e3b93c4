"""`lenet5`: the classic LeCun et al. (1998) layout, adapted to 28x28 input.

C1 conv 6@5x5 (padding 2, so 28x28 maps like the original 32x32 input) -> S2 subsampling 2x2 ->
C3 conv 16@5x5 (fully connected to S2, unlike the original's partial table) -> S4 subsampling 2x2 ->
F5 120 -> F6 84 -> output 10. tanh and average pooling by default; relu / max pooling as options.
Dropout (default 0) follows F5 and F6.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from fmlab.models.registry import Dropout, check_choice, check_dropout, make_activation, register

POOLS = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}
# LeNet-5 and simple-cnn train alike, so comparing them compares architectures; a one-cycle schedule at 3e-3
# beat AdamW at a constant 1e-3 (README, "Performance"). 12 epochs is where more stop paying for LeNet-5
# (benchmarks/time_to_accuracy.py --sweep; figures in the README and docs/benchmarks/epoch_sweeps.json)
SMALL_CNN_RECIPE = {"lr": 3e-3, "schedule": "onecycle", "weight_decay": 1e-4, "epochs": 12}


@register(
    "lenet5",
    defaults={"activation": "tanh", "pool": "avg", "dropout": 0.0},
    description="LeNet-5 (1998): conv 6@5x5, pool, conv 16@5x5, pool, FC 120, FC 84, 10; tanh + average pooling.",
    explain_layers=("features.act1", "features.act2", "features.pool2"),
    explainer=("guided_gradcam", "features.act1"),
    family="cnn",
    recipe=SMALL_CNN_RECIPE,
)
class LeNet5(nn.Module):
    def __init__(self, activation: str, pool: str, dropout: float) -> None:
        super().__init__()
        pooling = POOLS[check_choice("pool", pool, list(POOLS))]
        dropout = check_dropout(dropout)
        self.features = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(1, 6, 5, padding=2),  # 6 x 28 x 28
                act1=make_activation(activation),
                pool1=pooling(2),  # 6 x 14 x 14
                conv2=nn.Conv2d(6, 16, 5),  # 16 x 10 x 10
                act2=make_activation(activation),
                pool2=pooling(2),  # 16 x 5 x 5
            )
        )
        self.classifier = nn.Sequential(
            OrderedDict(
                flatten=nn.Flatten(),
                fc1=nn.Linear(16 * 5 * 5, 120),
                act3=make_activation(activation),
                drop1=Dropout(dropout),
                fc2=nn.Linear(120, 84),
                act4=make_activation(activation),
                drop2=Dropout(dropout),
                out=nn.Linear(84, 10),
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
