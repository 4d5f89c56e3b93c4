"""Any registered model as a scikit-learn classifier, wrapped the skorch way, trained by fmlab's engine.

    net = FmlabClassifier("lenet5", lr=3e-3, batch_size=128, max_epochs=5, module__dropout=0.1)
    net.fit(x_uint8, y)            # x: (N, 28, 28) or (N, 1, 28, 28) uint8 images, y: int labels
    net.predict_proba(x_test)

skorch provides the scikit-learn surface (constructor-only arguments, get_params/set_params/clone,
`module__<arg>` routed to the model builder, pickling for joblib and Dask); `fit` runs fmlab's one
training engine (fmlab.training.loop.train) on the resolved spec of these settings: the model's recipe,
schedule, augmentation, test-time averaging and channels-last included, exactly as `fmlab train` does.
A setting left at None comes from the recipe or the field default. The images passed to `fit` are the
training split (normalised with their own pixel statistics); there is no validation split inside a
fold, so the weights of the last epoch are kept and `predict_proba` is that epoch's predictor, in the run's
precision: a cell's score on a holdout split equals the last-epoch validation accuracy `fmlab train` records.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from skorch import NeuralNetClassifier
from torch import nn

from fmlab import models
from fmlab.config import TrainConfig
from fmlab.data.split import pixel_stats
from fmlab.errors import ConfigError
from fmlab.runs import resolve
from fmlab.training.loop import resolve_device, train

# every training setting is an estimator parameter, except these: the search supplies them (epochs as max_epochs,
# the split) or they name what is searched
NOT_SETTINGS = {"model", "model_args", "epochs", "seed", "early_stopping", "monitor", "split_seed", "train_size",
                "val_size"}
SETTINGS = tuple(k for k in TrainConfig.model_fields if k not in NOT_SETTINGS)


def as_images(x: Any) -> torch.Tensor:
    """uint8 images (N, 28, 28) or (N, 1, 28, 28), numpy or torch -> a (N, 1, 28, 28) uint8 tensor."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.dtype != torch.uint8:
        raise ConfigError(f"images must be uint8 pixels (0-255), got dtype {t.dtype}")
    return t.unsqueeze(1) if t.dim() == 3 else t


class FmlabClassifier(NeuralNetClassifier):
    """skorch classifier for the registered model `model`, trained the way `fmlab train` trains it."""

    def __init__(
        self,
        model: str = "mlp",
        *,
        optimizer: str | None = None,
        lr: float | None = None,
        batch_size: int | None = None,
        max_epochs: int | None = None,
        momentum: float | None = None,
        nesterov: bool | None = None,
        weight_decay: float | None = None,
        l1: float | None = None,
        l2: float | None = None,
        schedule: str | None = None,
        step_size: int | None = None,
        gamma: float | None = None,
        warmup: float | None = None,
        label_smoothing: float | None = None,
        augment: bool | None = None,
        crop: int | None = None,
        flip: bool | None = None,
        alternate_flip: bool | None = None,
        rotate: float | None = None,
        erase: float | None = None,
        tta_flip: bool | None = None,
        tta_shift: bool | None = None,
        precision: str | None = None,
        channels_last: bool | None = None,
        threads: int | None = None,
        seed: int = 0,
        device: str = "cpu",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("module", models.build)  # the builder; `model` names what it builds
        kwargs.setdefault("criterion", nn.CrossEntropyLoss)
        kwargs.setdefault("train_split", None)  # selection is the search's job (CV folds / holdout)
        kwargs.setdefault("verbose", 0)
        kwargs.setdefault("classes", list(range(10)))
        super().__init__(optimizer=optimizer, lr=lr, batch_size=batch_size, max_epochs=max_epochs, device=device,
                         **kwargs)
        vars(self).update(model=model, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, l1=l1, l2=l2,
                          schedule=schedule, step_size=step_size, gamma=gamma, warmup=warmup,
                          label_smoothing=label_smoothing, augment=augment, crop=crop, flip=flip,
                          alternate_flip=alternate_flip, rotate=rotate, erase=erase, tta_flip=tta_flip,
                          tta_shift=tta_shift, precision=precision, channels_last=channels_last, threads=threads,
                          seed=seed)

    def train_config(self) -> TrainConfig:
        """The resolved spec these settings train with (a bad value is a ConfigError)."""
        settings = {k: getattr(self, k) for k in SETTINGS if getattr(self, k) is not None}
        if self.max_epochs is not None:
            settings["epochs"] = self.max_epochs
        layer = {"model": self.model, "seed": self.seed, **settings, "model_args": self.get_params_for("module")}
        return resolve([("estimator", layer)])

    def fit(self, X: Any, y: Any = None, **fit_params: Any) -> FmlabClassifier:
        """Train on uint8 images through fmlab's engine; normalisation comes from these images only."""
        spec = self.train_config()
        device = resolve_device(self.device, self.model)
        images = as_images(X)
        labels = torch.as_tensor(np.asarray(y), dtype=torch.int64)
        fitted = train(spec, (images.to(device), labels.to(device)), None, pixel_stats(images.numpy()), device,
                       progress=False)
        self.predictor_, self.history_ = fitted.predictor, fitted.history
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (N, 10) of the trained predictor, computed in the precision it trained with, as
        `fmlab train` validates each epoch (so a cell's score is that validation accuracy)."""
        self.check_is_fitted(["predictor_"])
        logits = self.predictor_.logits(as_images(X), self.predictor_.spec.precision)
        return logits.double().softmax(1).numpy()
