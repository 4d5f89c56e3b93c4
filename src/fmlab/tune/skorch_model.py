"""Any registered torch model as a scikit-learn classifier (skorch `NeuralNetClassifier`).

    net = FmlabClassifier("lenet5", lr=3e-3, batch_size=128, max_epochs=5, weight_decay=1e-4)
    net.fit(x_uint8, y)            # x: (N, 28, 28) or (N, 1, 28, 28) uint8 images, y: int labels
    net.predict_proba(x_test)

Parameters carry fmlab's names so a grid can be written once for every model: `optimizer` is the
name sgd|adam|adamw (built by fmlab's make_optimizer), `l1`/`l2` are added to the training loss with
fmlab's convention, `module__dropout` and `module__<arg>` reach the model builder.
Batches are slices of one in-memory uint8 tensor, normalised with the statistics of the images
passed to `fit` (the training fold) — no per-sample Dataset/DataLoader work.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from skorch import NeuralNetClassifier
from torch import nn

from fmlab import models
from fmlab.config import TrainConfig, validate
from fmlab.data.split import pixel_stats
from fmlab.errors import ConfigError
from fmlab.train.learners import make_optimizer, penalised_params


def as_images(x: Any) -> torch.Tensor:
    """uint8 images (N, 28, 28) or (N, 1, 28, 28), numpy or torch -> a (N, 1, 28, 28) uint8 tensor."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.dtype != torch.uint8:
        raise ConfigError(f"images must be uint8 pixels (0-255), got dtype {t.dtype}")
    return t.unsqueeze(1) if t.dim() == 3 else t


class InMemory:
    """The dataset the net iterates: images and labels held as whole tensors on the device."""

    def __init__(self, x: Any, y: Any, device: str) -> None:
        self.x = as_images(x).to(device)
        self.y = None if y is None else torch.as_tensor(np.asarray(y), dtype=torch.int64).to(device)

    def __len__(self) -> int:
        return len(self.x)


class SliceBatches:
    """Re-iterable (normalised x, y) batches: a fresh permutation per pass when a generator is given."""

    def __init__(
        self, data: InMemory, batch_size: int, mean: float, std: float, generator: torch.Generator | None
    ) -> None:
        self.data, self.batch_size, self.mean, self.std, self.generator = data, batch_size, mean, std, generator

    def __len__(self) -> int:
        return -(-len(self.data) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        n, x, y = len(self.data), self.data.x, self.data.y
        order = torch.randperm(n, generator=self.generator).to(x.device) if self.generator is not None else None
        for start in range(0, n, self.batch_size):
            if order is None:
                xb, yb = x[start : start + self.batch_size], None if y is None else y[start : start + self.batch_size]
            else:
                idx = order[start : start + self.batch_size]
                xb, yb = x[idx], None if y is None else y[idx]
            yield (xb.float() / 255.0 - self.mean) / self.std, yb


class FmlabClassifier(NeuralNetClassifier):
    """skorch classifier for the registered model `model`, trained the way `fmlab train` trains it."""

    def __init__(
        self,
        model: str = "mlp",
        *,
        optimizer: str = "adamw",
        lr: float = 1e-3,
        batch_size: int = 128,
        max_epochs: int = 10,
        momentum: float = 0.9,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        l1: float = 0.0,
        l2: float = 0.0,
        label_smoothing: float = 0.0,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("module", models.build)  # the builder; `model` names what it builds
        kwargs.setdefault("criterion", nn.CrossEntropyLoss)
        kwargs.setdefault("train_split", None)  # selection is the search's job (CV folds / holdout)
        kwargs.setdefault("verbose", 0)
        kwargs.setdefault("classes", list(range(10)))
        super().__init__(optimizer=optimizer, lr=lr, batch_size=batch_size, max_epochs=max_epochs, **kwargs)
        self.model, self.momentum, self.nesterov, self.weight_decay = model, momentum, nesterov, weight_decay
        self.l1, self.l2, self.label_smoothing, self.seed = l1, l2, label_smoothing, seed

    def train_config(self) -> TrainConfig:
        """The fmlab TrainConfig these settings correspond to (validated: a bad value is a ConfigError)."""
        keys = ("model", "optimizer", "lr", "batch_size", "momentum", "nesterov", "weight_decay", "l1", "l2",
                "label_smoothing", "seed")
        return validate(TrainConfig, {**{k: getattr(self, k) for k in keys}, "epochs": self.max_epochs}, "estimator")

    # skorch hooks: build, optimise, penalise, feed.

    def initialize_module(self) -> FmlabClassifier:
        if models.get(self.model).numpy:
            raise ConfigError(f"'{self.model}' is the NumPy model; wrap its torch twin 'mlp' instead")
        torch.manual_seed(self.seed)
        self.module_ = models.build(self.model, **self.get_params_for("module"))
        self.generator_ = torch.Generator().manual_seed(self.seed)
        return self

    def initialize_criterion(self) -> FmlabClassifier:
        self.criterion_ = nn.CrossEntropyLoss(label_smoothing=self.label_smoothing)
        return self

    def initialize_optimizer(self, triggered_directly: Any = None) -> FmlabClassifier:
        self.optimizer_ = make_optimizer(list(self.module_.parameters()), self.train_config())
        return self

    def get_loss(self, y_pred: torch.Tensor, y_true: Any, X: Any = None, training: bool = False) -> torch.Tensor:
        loss = super().get_loss(y_pred, y_true, X=X, training=training)
        if training and (self.l1 or self.l2):
            weights = penalised_params(self.module_)
            if self.l1:
                loss = loss + self.l1 * sum(p.abs().sum() for p in weights)
            if self.l2:
                loss = loss + self.l2 * sum(p.pow(2).sum() for p in weights)
        return loss

    def fit(self, X: Any, y: Any = None, **fit_params: Any) -> FmlabClassifier:
        """Fit on uint8 images; normalisation statistics come from these (training) images only."""
        if not (self.warm_start and hasattr(self, "mean_")):
            self.mean_, self.std_ = pixel_stats(as_images(X).cpu().numpy())
        return super().fit(X, y, **fit_params)

    def get_dataset(self, X: Any, y: Any = None) -> InMemory:
        return X if isinstance(X, InMemory) else InMemory(X, y, self.device)

    def get_iterator(self, dataset: InMemory, training: bool = False) -> SliceBatches:
        self.check_is_fitted(["module_", "mean_"])
        size = len(dataset) if self.batch_size == -1 else self.batch_size
        return SliceBatches(dataset, size, self.mean_, self.std_, self.generator_ if training else None)
