"""The from-scratch NumPy network against torch: gradients, weights, optimisers, training."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fmlab import models
from fmlab.errors import ConfigError, FmlabError
from fmlab.models.mlp_numpy import NumpyMLP, make_optimizer, penalty
from fmlab.training.loop import resolve_device

HIDDEN = (12, 7)


def batch(n: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, 28, 28)), rng.integers(0, 10, n)


def torch_twin(net: NumpyMLP) -> torch.nn.Module:
    model = models.build("mlp", hidden=net.hidden, activation=net.activation, dropout=0.0).double()
    model.load_state_dict(net.state_dict(), strict=True)
    return model


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(a).max(), np.abs(b).max(), 1e-300))


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_gradients_match_torch_autograd(activation, label_smoothing):
    net = NumpyMLP(hidden=HIDDEN, activation=activation, seed=1, dtype=np.float64)
    x, y = batch()
    l1, l2 = 1e-3, 5e-3
    loss, grads = net.loss_and_grads(x, y, l1=l1, l2=l2, label_smoothing=label_smoothing)

    model = torch_twin(net)
    logits = model(torch.from_numpy(x))
    weights = [p for name, p in model.named_parameters() if name.endswith(".weight")]
    expected = F.cross_entropy(logits, torch.from_numpy(y), label_smoothing=label_smoothing)
    expected = expected + l1 * sum(w.abs().sum() for w in weights) + l2 * sum(w.pow(2).sum() for w in weights)
    expected.backward()

    assert loss == pytest.approx(expected.item(), rel=1e-12)
    assert set(grads) == set(net.params)
    for name, p in model.named_parameters():
        assert grads[name].shape == p.shape and grads[name].dtype == np.float64
        assert relative_error(grads[name], p.grad.numpy()) < 1e-6, name


def test_dropout_gradients_match_finite_differences():
    net = NumpyMLP(hidden=(6, 5), activation="tanh", dropout=0.3, seed=2, dtype=np.float64)
    x, y = batch(8)

    def loss_with_fixed_mask() -> tuple[float, dict[str, np.ndarray]]:
        net.rng = np.random.default_rng(7)  # the same dropout masks on every call
        return net.loss_and_grads(x, y, l2=1e-2)

    _, grads = loss_with_fixed_mask()
    eps = 1e-6
    for key, index in [("fc1.weight", (3, 300)), ("fc2.weight", (1, 2)), ("fc2.bias", (4,)), ("out.weight", (9, 0))]:
        original = net.params[key][index]
        net.params[key][index] = original + eps
        up, _ = loss_with_fixed_mask()
        net.params[key][index] = original - eps
        down, _ = loss_with_fixed_mask()
        net.params[key][index] = original
        assert (up - down) / (2 * eps) == pytest.approx(grads[key][index], rel=1e-6, abs=1e-10), key


def test_penalty_counts_weights_not_biases():
    params = {"fc1.weight": np.array([[1.0, -2.0]]), "fc1.bias": np.array([100.0]), "out.weight": np.array([[3.0]])}
    assert penalty(params, l1=0.5, l2=0.0) == 0.5 * 6
    assert penalty(params, l1=0.0, l2=0.1) == pytest.approx(0.1 * 14)


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_state_dict_loads_into_the_torch_mlp_with_identical_logits(activation):
    net = NumpyMLP(hidden=(32, 16, 8), activation=activation, dropout=0.25, seed=3)
    model = models.build("mlp-numpy", hidden=[32, 16, 8], activation=activation, dropout=0.25).eval()
    assert list(net.params) == list(model.state_dict())
    model.load_state_dict(net.state_dict(), strict=True)
    x, _ = batch(20)
    x = x.astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(net.forward(x), expected, rtol=1e-5, atol=1e-5)

    other = NumpyMLP(hidden=(32, 16, 8), activation=activation, seed=4)
    other.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(other.forward(x), net.forward(x))


def test_load_state_dict_rejects_weights_of_another_shape():
    net = NumpyMLP(hidden=(8,))
    with pytest.raises(ConfigError, match="do not fit"):
        net.load_state_dict(NumpyMLP(hidden=(9,)).state_dict())
    with pytest.raises(ConfigError, match="do not fit"):
        net.load_state_dict(NumpyMLP(hidden=(8, 8)).state_dict())


def test_bad_arguments_raise_config_error():
    with pytest.raises(ConfigError):
        NumpyMLP(hidden=(0,))
    with pytest.raises(ConfigError):
        NumpyMLP(activation="swish")
    with pytest.raises(ConfigError):
        make_optimizer("rmsprop", NumpyMLP(hidden=(4,)).params, 0.1)


def test_dropout_only_in_training_mode():
    net = NumpyMLP(hidden=(16,), dropout=0.5, seed=0)
    x, _ = batch(4)
    np.testing.assert_array_equal(net.forward(x), net.forward(x))
    assert not np.allclose(net.forward(x, train=True), net.forward(x, train=True))


@pytest.mark.parametrize(
    "name,kwargs,torch_opt",
    [
        ("sgd", {"momentum": 0.0}, lambda p: torch.optim.SGD(p, lr=0.1)),
        ("sgd", {"momentum": 0.9, "weight_decay": 0.01}, lambda p: torch.optim.SGD(p, 0.1, 0.9, weight_decay=0.01)),
        ("sgd", {"momentum": 0.8, "nesterov": True}, lambda p: torch.optim.SGD(p, 0.1, 0.8, nesterov=True)),
        ("adam", {}, lambda p: torch.optim.Adam(p, lr=0.1)),
        (
            "adam",
            {"weight_decay": 0.01, "betas": (0.8, 0.9), "eps": 1e-6},
            lambda p: torch.optim.Adam(p, 0.1, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.01),
        ),
        ("adamw", {"weight_decay": 0.05}, lambda p: torch.optim.AdamW(p, lr=0.1, weight_decay=0.05)),
    ],
)
def test_optimizer_steps_match_torch_optim(name, kwargs, torch_opt):
    net = NumpyMLP(hidden=(10,), seed=5, dtype=np.float64)
    model = torch_twin(net)
    opt = make_optimizer(name, net.params, lr=0.1, **kwargs)
    reference = torch_opt(list(model.parameters()))
    for step in range(4):
        x, y = batch(16, seed=step)
        _, grads = net.loss_and_grads(x, y)
        opt.step(net.params, grads)
        reference.zero_grad()
        F.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        reference.step()
        for key, p in model.state_dict().items():
            np.testing.assert_allclose(net.params[key], p.numpy(), rtol=1e-10, atol=1e-12, err_msg=f"{key} @ {step}")


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_optimizer_state_round_trips(name):
    def run(steps: int, resume_after: int | None = None) -> dict[str, np.ndarray]:
        net = NumpyMLP(hidden=(6,), seed=0, dtype=np.float64)
        opt = make_optimizer(name, net.params, lr=0.05)
        for step in range(steps):
            if step == resume_after:
                saved_net, saved_opt = net.state_dict(), opt.state_dict()
                net = NumpyMLP(hidden=(6,), seed=99, dtype=np.float64)
                net.load_state_dict(saved_net)
                opt = make_optimizer(name, net.params, lr=0.05)
                opt.load_state_dict(saved_opt)
            opt.step(net.params, net.loss_and_grads(*batch(8, seed=step))[1])
        return net.params

    straight, resumed = run(5), run(5, resume_after=2)
    for key in straight:
        np.testing.assert_array_equal(straight[key], resumed[key])


@pytest.mark.parametrize("name,lr", [("sgd", 0.1), ("adam", 0.01)])
def test_training_reduces_the_loss_on_a_separable_problem(name, lr):
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((10, 784)) * 0.5
    y = rng.integers(0, 10, 512)
    x = (centres[y] + 0.5 * rng.standard_normal((512, 784))).astype(np.float32)
    net = NumpyMLP(hidden=(32,), dropout=0.1, seed=0)
    opt = make_optimizer(name, net.params, lr=lr, momentum=0.9)
    first, _ = net.loss_and_grads(x, y)
    for _ in range(3):
        for i in range(0, 512, 64):
            _, grads = net.loss_and_grads(x[i : i + 64], y[i : i + 64], l2=1e-4)
            opt.step(net.params, grads)
    last, _ = net.loss_and_grads(x, y)
    assert last < 0.25 * first
    assert (net.forward(x).argmax(1) == y).mean() > 0.95
    assert all(p.dtype == np.float32 for p in net.params.values())


@pytest.mark.integration
def test_trains_to_85_percent_on_real_data(real_data):
    """Two epochs of Adam on the 60k training images: at least 85% on the test set."""
    mean, std = 0.2860, 0.3530
    x_train = ((real_data.x_train.reshape(-1, 784) / 255.0 - mean) / std).astype(np.float32)
    x_test = ((real_data.x_test.reshape(-1, 784) / 255.0 - mean) / std).astype(np.float32)
    y_train = real_data.y_train.astype(np.int64)
    net = NumpyMLP(seed=0)
    opt = make_optimizer("adam", net.params, lr=1e-3)
    order = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(2):
        perm = order.permutation(len(x_train))
        for i in range(0, len(perm), 128):
            idx = perm[i : i + 128]
            opt.step(net.params, net.loss_and_grads(x_train[idx], y_train[idx])[1])
    accuracy = float((net.forward(x_test).argmax(1) == real_data.y_test).mean())
    print(f"NumpyMLP: {accuracy:.4f} test accuracy after {time.perf_counter() - start:.1f} s")
    assert accuracy >= 0.85


def test_the_numpy_model_trains_on_the_cpu_and_refuses_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto", "mlp") == torch.device("cuda")
    assert resolve_device("auto", "mlp-numpy") == torch.device("cpu")
    with pytest.raises(FmlabError, match="runs on the CPU only"):
        resolve_device("cuda", "mlp-numpy")
