"""The feed-forward network written from scratch in NumPy: forward, loss, backward, update.

Same layers, names and shapes as the torch `mlp` (weights are (out, in)), so a trained NumpyMLP loads
into its torch twin with `load_state_dict(strict=True)`. For each hidden layer i:

    z_i = h_{i-1} @ W_i.T + b_i,    h_i = dropout(act(z_i))        (h_0 = x flattened to 784)
    logits = h_k @ W_out.T + b_out
    loss = mean_n CE(softmax(logits_n), q_n) + penalty

with q the (optionally label-smoothed) target distribution, as in torch's cross_entropy, and the
penalty convention shared with the torch training loop, over weight matrices only (not biases):

    penalty = l1 * sum_W |W| + l2 * sum_W W**2
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy.special import erf

from fmlab.errors import ConfigError
from fmlab.models.mlp import MLP, check_mlp_args, layer_sizes
from fmlab.models.registry import check_choice, register

register(
    "mlp-numpy",
    defaults={"hidden": (256, 128), "activation": "relu", "dropout": 0.2},
    description="An mlp (256-128) written from scratch in NumPy (hand-written backward pass, SGD/Adam).",
    family="ffnn",
    numpy=True,
    recipe={"optimizer": "adam", "lr": 1e-3, "schedule": "cosine", "epochs": 6},
)(MLP)

Params = dict[str, np.ndarray]

# ---- activations: f(z) and f'(z) -------------------------------------------------------------------


def relu(z: np.ndarray) -> np.ndarray:
    return np.maximum(z, 0)


def relu_grad(z: np.ndarray) -> np.ndarray:
    return (z > 0).astype(z.dtype)


def tanh_grad(z: np.ndarray) -> np.ndarray:
    return 1 - np.tanh(z) ** 2


def gelu(z: np.ndarray) -> np.ndarray:  # exact GELU, z * Phi(z), as torch.nn.GELU()
    return 0.5 * z * (1 + erf(z / np.sqrt(2)))


def gelu_grad(z: np.ndarray) -> np.ndarray:  # Phi(z) + z * phi(z)
    return 0.5 * (1 + erf(z / np.sqrt(2))) + z * np.exp(-0.5 * z**2) / np.sqrt(2 * np.pi)


ACTIVATIONS = {"relu": (relu, relu_grad), "tanh": (np.tanh, tanh_grad), "gelu": (gelu, gelu_grad)}


# ---- the penalty ---------------------------------------------------------------------------------


def penalty(params: Params, l1: float, l2: float) -> float:
    """l1 * sum|W| + l2 * sum W**2 over the weight matrices (keys ending in '.weight')."""
    weights = [w for k, w in params.items() if k.endswith(".weight")]
    return float(l1 * sum(np.abs(w).sum() for w in weights) + l2 * sum((w**2).sum() for w in weights))


def penalty_grads(params: Params, l1: float, l2: float) -> Params:
    return {k: l1 * np.sign(w) + 2 * l2 * w for k, w in params.items() if k.endswith(".weight")}


# ---- the network ---------------------------------------------------------------------------------


class NumpyMLP:
    def __init__(
        self,
        hidden: Sequence[int] = (256, 128),
        activation: str = "relu",
        dropout: float = 0.0,
        seed: int = 0,
        dtype: Any = np.float32,
    ) -> None:
        self.hidden, self.activation, self.dropout = check_mlp_args(hidden, activation, dropout)
        self.dtype = np.dtype(dtype)
        self.rng = np.random.default_rng(seed)  # initial weights, then dropout masks
        self.layers = [name for name, _, _ in layer_sizes(self.hidden)]
        # torch.nn.Linear's initialisation: W and b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        self.params: Params = {}
        for name, fan_in, fan_out in layer_sizes(self.hidden):
            bound = 1 / np.sqrt(fan_in)
            self.params[f"{name}.weight"] = self.rng.uniform(-bound, bound, (fan_out, fan_in)).astype(self.dtype)
            self.params[f"{name}.bias"] = self.rng.uniform(-bound, bound, fan_out).astype(self.dtype)

    def _forward(self, x: np.ndarray, train: bool) -> tuple[np.ndarray, list[tuple]]:
        """Logits and, per layer, what backward needs: (input h, pre-activation z, dropout mask); z, mask are
        None for the output layer."""
        act, _ = ACTIVATIONS[self.activation]
        h = np.asarray(x, dtype=self.dtype).reshape(len(x), -1)
        cache = []
        for name in self.layers[:-1]:
            z = h @ self.params[f"{name}.weight"].T + self.params[f"{name}.bias"]
            mask = None
            if train and self.dropout > 0:  # inverted dropout: keep with prob 1-p, scale by 1/(1-p)
                mask = (self.rng.random(z.shape) >= self.dropout).astype(self.dtype) / self.dtype.type(1 - self.dropout)
            cache.append((h, z, mask))
            h = act(z) if mask is None else act(z) * mask
        logits = h @ self.params["out.weight"].T + self.params["out.bias"]
        cache.append((h, None, None))
        return logits, cache

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """x (N, 1, 28, 28) or (N, 784) -> logits (N, 10); `train` turns dropout on."""
        return self._forward(x, train)[0]

    def loss_and_grads(
        self,
        x: np.ndarray,
        y: np.ndarray,
        l1: float = 0.0,
        l2: float = 0.0,
        label_smoothing: float = 0.0,
        return_logits: bool = False,
    ) -> tuple[float, Params] | tuple[float, Params, np.ndarray]:
        """One training-mode pass: (loss, grads[, logits]) with loss = mean CE + penalty."""
        logits, cache = self._forward(x, train=True)
        n, k = logits.shape

        # softmax cross-entropy against q = (1 - eps) * onehot(y) + eps / K
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        q = np.full_like(log_probs, label_smoothing / k)
        q[np.arange(n), np.asarray(y)] += 1 - label_smoothing
        loss = -(q * log_probs).sum() / n + penalty(self.params, l1, l2)

        # backward: dL/dlogits = (softmax - q) / N, then down through the layers (cache[i] = layer i's input h,
        # and for hidden layers its pre-activation z and dropout mask)
        _, d_act = ACTIVATIONS[self.activation]
        grads: Params = {}
        dz = (np.exp(log_probs) - q) / n
        for i in reversed(range(len(self.layers))):
            weight, h = self.params[f"{self.layers[i]}.weight"], cache[i][0]
            grads[f"{self.layers[i]}.weight"] = dz.T @ h
            grads[f"{self.layers[i]}.bias"] = dz.sum(axis=0)
            if i > 0:  # h = dropout(act(z)) of the layer below
                _, z, mask = cache[i - 1]
                dh = dz @ weight
                dz = (dh if mask is None else dh * mask) * d_act(z)
        if l1 or l2:
            for key, g in penalty_grads(self.params, l1, l2).items():
                grads[key] = grads[key] + g
        grads = {key: grads[key].astype(self.dtype, copy=False) for key in self.params}
        return (float(loss), grads, logits) if return_logits else (float(loss), grads)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Weights as torch tensors, with the keys and shapes of the torch `mlp` of the same config."""
        return {k: torch.from_numpy(v.copy()) for k, v in self.params.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load weights (torch tensors or arrays) with exactly the keys and shapes of `params`."""
        if set(state) != set(self.params):
            raise ConfigError(
                f"weights do not fit this network: expected keys {sorted(self.params)}, got {sorted(state)}"
            )
        for key, value in state.items():
            array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            if array.shape != self.params[key].shape:
                raise ConfigError(
                    f"weights do not fit this network: {key} has shape {array.shape}, expected {self.params[key].shape}"
                )
            self.params[key] = array.astype(self.dtype, copy=True)


# ---- optimisers: step(params, grads) updates params in place, following torch.optim exactly ----------


class SGD:
    """v = momentum * v + g (g including weight_decay * p);  p -= lr * (g + momentum * v if nesterov else v)."""

    def __init__(
        self, params: Params, lr: float, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0
    ) -> None:
        self.lr, self.momentum, self.nesterov, self.weight_decay = lr, momentum, nesterov, weight_decay
        self.velocity = {k: np.zeros_like(p) for k, p in params.items()}

    def step(self, params: Params, grads: Params) -> None:
        for k, p in params.items():
            g = grads[k] + self.weight_decay * p
            if self.momentum:
                self.velocity[k] = v = self.momentum * self.velocity[k] + g
                g = g + self.momentum * v if self.nesterov else v
            p -= self.lr * g

    def state_dict(self) -> dict[str, Any]:
        return {"velocity": {k: torch.from_numpy(v.copy()) for k, v in self.velocity.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.velocity = {k: v.numpy().copy() for k, v in state["velocity"].items()}


class Adam:
    """m, v = running means of g and g**2;  p -= lr * m_hat / (sqrt(v_hat) + eps).

    Adam adds weight_decay * p to g (L2); AdamW (decoupled=True) shrinks p by lr * weight_decay instead.
    """

    def __init__(
        self,
        params: Params,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled: bool = False,
    ) -> None:
        self.lr, self.betas, self.eps, self.weight_decay, self.decoupled = lr, betas, eps, weight_decay, decoupled
        self.t = 0
        self.m = {k: np.zeros_like(p) for k, p in params.items()}
        self.v = {k: np.zeros_like(p) for k, p in params.items()}

    def step(self, params: Params, grads: Params) -> None:
        self.t += 1
        b1, b2 = self.betas
        for k, p in params.items():
            g = grads[k]
            if self.decoupled:
                p *= 1 - self.lr * self.weight_decay
            elif self.weight_decay:
                g = g + self.weight_decay * p
            self.m[k] = b1 * self.m[k] + (1 - b1) * g
            self.v[k] = b2 * self.v[k] + (1 - b2) * g**2
            m_hat_scale = self.lr / (1 - b1**self.t)
            denom = np.sqrt(self.v[k]) / np.sqrt(1 - b2**self.t) + self.eps
            p -= m_hat_scale * self.m[k] / denom

    def state_dict(self) -> dict[str, Any]:
        return {
            "t": self.t,
            "m": {k: torch.from_numpy(v.copy()) for k, v in self.m.items()},
            "v": {k: torch.from_numpy(v.copy()) for k, v in self.v.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.t = int(state["t"])
        self.m = {k: v.numpy().copy() for k, v in state["m"].items()}
        self.v = {k: v.numpy().copy() for k, v in state["v"].items()}


def make_optimizer(
    name: str,
    params: Params,
    lr: float,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> SGD | Adam:
    """Optimizer `name` ("sgd", "adam" or "adamw"), with torch.optim's defaults and update rules."""
    name = check_choice("optimizer", name, ["sgd", "adam", "adamw"])
    if name == "sgd":
        return SGD(params, lr, momentum, nesterov, weight_decay)
    return Adam(params, lr, betas, eps, weight_decay, decoupled=name == "adamw")
