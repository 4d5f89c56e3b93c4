"""The predictor: a trained network with its input normalisation and test-time averaging.

It is what a run's checkpoint holds and what every consumer uses: the validation after each epoch,
the test pass after training, `fmlab evaluate`, `fmlab predict`, the scikit-learn estimator and the
ONNX export (which exports `PredictorModule` whole), so the model a report scores is the model a
user deploys.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fmlab import models
from fmlab.config import TrainConfig, validate
from fmlab.errors import ConfigError
from fmlab.hardware import autocast
from fmlab.runs.spec import is_resolved
from fmlab.training.checkpoint import FORMAT_VERSION, NUM_CLASSES, CheckpointError


class PredictorModule(nn.Module):
    """Pixels (N, 1, 28, 28), float in [0, 255] -> class scores: normalise and run the network; with test-time
    averaging, average the log-probabilities of the views: the image, with `tta_shift` also the image shifted one
    pixel down-right and one up-left (the gap filled with background 0, as crop training pads), and with
    `tta_flip` the mirror of each."""

    def __init__(self, net: nn.Module, mean: float, std: float, tta_flip: bool, tta_shift: bool) -> None:
        super().__init__()
        self.net, self.mean, self.std = net, float(mean), float(std)
        self.tta_flip, self.tta_shift = bool(tta_flip), bool(tta_shift)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        views = [pixels]
        if self.tta_shift:
            views += [F.pad(pixels, (1, 0, 1, 0))[..., :-1, :-1], F.pad(pixels, (0, 1, 0, 1))[..., 1:, 1:]]
        if self.tta_flip:
            views += [view.flip(-1) for view in views]
        if len(views) == 1:
            return self.net((pixels / 255.0 - self.mean) / self.std)
        return sum(self.net((view / 255.0 - self.mean) / self.std).log_softmax(1) for view in views) / len(views)


class Predictor:
    """`spec`'s network with normalisation `mean`/`std` (of the training split's pixels on [0, 1])."""

    BATCH = 1024  # one chunking for every caller, so the same images give the same numbers everywhere

    def __init__(self, net: nn.Module, spec: TrainConfig, mean: float, std: float, key: str | None = None) -> None:
        self.spec, self.key = spec, key
        self.module = PredictorModule(net, mean, std, spec.tta_flip, spec.tta_shift)

    @property
    def net(self) -> nn.Module:
        return self.module.net

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def family(self) -> str:
        return models.get(self.spec.model).family

    def to(self, device: torch.device | str) -> Predictor:
        self.module.to(device)
        return self

    def _channels_last(self) -> bool:
        return self.spec.channels_last and self.device.type == "cpu"

    def inputs(self, images: Any) -> torch.Tensor:
        """uint8 (N, 28, 28) or (N, 1, 28, 28) images, numpy or torch -> float pixels (N, 1, 28, 28) on the device."""
        x = torch.as_tensor(np.ascontiguousarray(images) if isinstance(images, np.ndarray) else images)
        x = (x.unsqueeze(1) if x.dim() == 3 else x).to(self.device).float()
        return x.contiguous(memory_format=torch.channels_last) if self._channels_last() else x

    def normalise(self, images: Any) -> torch.Tensor:
        """The network's input for `images` (what attributions explain)."""
        return (self.inputs(images) / 255.0 - self.module.mean) / self.module.std

    def logits(self, images: Any, precision: str = "fp32") -> torch.Tensor:
        """Class scores (N, 10) float32 on the CPU, in chunks of BATCH images. The scores a run records and serves
        are fp32; training validates in its own precision (`precision`), which is faster and only ranks epochs."""
        self.module.eval()
        if self._channels_last():  # outside inference mode: the weights must stay usable by autograd
            self.net.to(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(precision, self.device):
            out = [self.module(self.inputs(images[i : i + self.BATCH])).float().cpu()
                   for i in range(0, len(images), self.BATCH)]
        return torch.cat(out) if out else torch.zeros(0, NUM_CLASSES)

    def probs(self, images: Any) -> np.ndarray:
        """Softmax probabilities (N, 10), float64."""
        return self.logits(images).double().softmax(1).numpy()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().contiguous().clone() for k, v in self.net.state_dict().items()}

    def digest(self) -> str:
        """SHA-256 of the weights (memory format and device aside): ties predictions to the checkpoint."""
        h = hashlib.sha256()
        for name, tensor in sorted(self.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.numpy().tobytes())
        return h.hexdigest()

    KEYS = ("format", "num_classes", "spec", "key", "norm", "state_dict")  # what payload() writes

    def payload(self, key: str) -> dict[str, Any]:
        """What a checkpoint file holds: the resolved spec, the run's key, the normalisation, the weights."""
        return {"format": FORMAT_VERSION, "num_classes": NUM_CLASSES, "spec": self.spec.model_dump(mode="json"),
                "key": key, "norm": {"mean": self.module.mean, "std": self.module.std},
                "state_dict": self.state_dict()}

    @classmethod
    def from_payload(cls, payload: dict[str, Any], source: str) -> Predictor:
        """Rebuild the predictor a checkpoint holds (read by fmlab.training.checkpoint.read), in eval mode."""
        try:
            spec = validate(TrainConfig, payload.get("spec"), "spec")
            if not is_resolved(spec):
                raise ConfigError("spec: not a resolved spec (model arguments or threads missing)")
            net = models.build(spec.model, **spec.model_args)
        except ConfigError as exc:
            raise CheckpointError(f"{source}: checkpoint {exc}") from None
        norm = payload.get("norm")
        mean, std = (norm.get("mean"), norm.get("std")) if isinstance(norm, dict) else (None, None)
        if not all(isinstance(v, float) and math.isfinite(v) for v in (mean, std)) or not std > 0:
            raise CheckpointError(f"{source}: checkpoint normalisation {norm!r} is invalid "
                                  "(needs a finite mean and std > 0)")
        weights = payload["state_dict"]
        try:
            if not isinstance(weights, dict):
                raise TypeError(f"state_dict is a {type(weights).__name__}")
            net.load_state_dict(weights, strict=True)
        except (RuntimeError, KeyError, TypeError) as exc:
            detail = "; ".join(line.strip() for line in str(exc).splitlines()[1:3]) or str(exc)
            raise CheckpointError(f"{source}: weights do not fit a '{spec.model}' model ({detail[:300]})") from None
        if not all(torch.isfinite(t).all() for t in net.state_dict().values() if t.is_floating_point()):
            raise CheckpointError(f"{source}: weights are not finite (NaN or infinity); retrain the model")
        key = payload.get("key")
        return cls(net.eval(), spec, mean, std, key if isinstance(key, str) else None)
