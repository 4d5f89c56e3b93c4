"""The model registry and every registered model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fmlab import models
from fmlab.errors import ConfigError

ALL = models.names()


def conv(c_in: int, c_out: int, k: int) -> int:
    return c_out * c_in * k * k + c_out


def linear(n_in: int, n_out: int) -> int:
    return n_out * n_in + n_out


def test_every_family_is_registered():
    assert set(ALL) == {"logreg", "mlp", "mlp-numpy", "lenet5", "simple-cnn", "cnn"}
    assert [models.get(n).numpy for n in ALL].count(True) == 1 and models.get("mlp-numpy").numpy
    for name in ALL:
        spec = models.get(name)
        assert spec.name == name and spec.family in ("linear", "ffnn", "cnn") and spec.description
        assert "dropout" in spec.defaults


@pytest.mark.parametrize("name", ALL)
def test_output_shape_and_parameter_count(name):
    torch.manual_seed(0)
    model = models.build(name).eval()
    with torch.no_grad():
        out = model(torch.randn(5, 1, 28, 28))
    assert out.shape == (5, 10) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert models.count_parameters(model) == sum(p.numel() for p in model.parameters()) > 0


def test_hand_computed_parameter_counts():
    assert models.count_parameters(models.build("logreg")) == linear(784, 10) == 7850
    # LeNet-5 on 28x28 with padding 2: 28 -conv5 p2-> 28 -pool-> 14 -conv5-> 10 -pool-> 5, so F5 sees 16*5*5
    lenet = conv(1, 6, 5) + conv(6, 16, 5) + linear(16 * 5 * 5, 120) + linear(120, 84) + linear(84, 10)
    assert models.count_parameters(models.build("lenet5")) == lenet == 61706
    mlp = linear(784, 256) + linear(256, 128) + linear(128, 10)
    assert models.count_parameters(models.build("mlp", hidden=[256, 128])) == mlp


def test_simple_cnn_is_strictly_smaller_than_lenet5():
    simple, lenet = models.build("simple-cnn"), models.build("lenet5")

    def filters(model: nn.Module) -> int:
        return sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))

    def layers(model: nn.Module) -> int:
        return sum(isinstance(m, nn.Conv2d | nn.Linear) for m in model.modules())

    assert models.count_parameters(simple) < models.count_parameters(lenet)
    assert filters(simple) < filters(lenet)
    assert layers(simple) < layers(lenet)


@pytest.mark.parametrize("name", ALL)
def test_explain_layers_are_post_activation_maps_highest_resolution_first(name):
    model = models.build(name)
    layers = models.get(name).explain_layers
    if models.get(name).family != "cnn":
        assert layers == ()
        return
    sizes = []
    for path in layers:
        seen = []
        handle = model.get_submodule(path).register_forward_hook(lambda _m, _i, out, s=seen: s.append(out.shape))
        model(torch.randn(2, 1, 28, 28))
        handle.remove()
        assert len(seen) == 1 and len(seen[0]) == 4  # one spatial map per forward pass
        sizes.append(seen[0][2])
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] >= 3


def test_cnn_convs_deepen_blocks_and_keep_the_explained_maps():
    model = models.build("cnn", channels=[4, 8, 8], convs=[1, 2, 3])
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 6 and [c.in_channels for c in convs] == [1, 4, 8, 8, 8, 8]
    assert all(isinstance(model.get_submodule(p), nn.ReLU) for p in models.get("cnn").explain_layers)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_unknown_model_names_the_choices():
    with pytest.raises(ConfigError, match=r"unknown model 'resnet'; choose one of: .*lenet5"):
        models.get("resnet")
    with pytest.raises(ConfigError):
        models.build("resnet")


def test_unknown_argument_names_the_valid_ones():
    with pytest.raises(ConfigError, match=r"no argument 'widht'.*valid arguments: activation, dropout, hidden"):
        models.build("mlp", widht=3)


@pytest.mark.parametrize(
    "name,args",
    [
        ("mlp", {"hidden": [256, -1]}),
        ("mlp", {"hidden": []}),
        ("mlp", {"hidden": "256"}),
        ("mlp", {"hidden": [2.5]}),
        ("mlp", {"activation": "swish"}),
        ("mlp-numpy", {"activation": "sigmoid"}),
        ("lenet5", {"pool": "median"}),
        ("lenet5", {"activation": None}),
        ("simple-cnn", {"channels": [4, 8, 16]}),
        ("cnn", {"channels": [32, 64]}),
        ("cnn", {"hidden": 0}),
        ("cnn", {"convs": [1, 0, 2]}),
        ("cnn", {"convs": [2, 2]}),
        ("cnn", {"hidden": True}),
        ("logreg", {"dropout": 1.0}),
        ("cnn", {"dropout": -0.1}),
        ("mlp", {"dropout": "0.5"}),
    ],
)
def test_bad_values_raise_config_error(name, args):
    with pytest.raises(ConfigError):
        models.build(name, **args)


@pytest.mark.parametrize("name", ALL)
def test_dropout_changes_train_mode_but_not_eval_mode(name):
    x = torch.randn(8, 1, 28, 28)
    torch.manual_seed(0)
    plain = models.build(name, dropout=0.0)
    torch.manual_seed(0)
    dropped = models.build(name, dropout=0.5)
    plain.eval(), dropped.eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(x), dropped(x))
        dropped.train()
        assert not torch.allclose(dropped(x), dropped(x))
        plain.train()
        torch.testing.assert_close(plain(x), plain(x))


@pytest.mark.parametrize("p", [0.2, 0.3, 0.5])
def test_cpu_dropout_drops_at_its_rate_and_keeps_the_mean(p):
    from fmlab.models.registry import Dropout

    layer, x = Dropout(p), (torch.rand(400, 1000, dtype=torch.bfloat16) + 0.5).requires_grad_()
    torch.manual_seed(3)
    y = layer(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - p) < 0.005  # 400k draws: 0.005 is over 6 standard deviations
    kept = y != 0
    torch.testing.assert_close(y[kept].float(), x[kept].float() / (1 - p), rtol=0.01, atol=0)
    y.float().sum().backward()  # the gradient flows through the kept units only, with the same scale
    torch.testing.assert_close(x.grad.float(), kept.float() / (1 - p), rtol=0.01, atol=0)
    torch.manual_seed(3)
    assert torch.equal(layer(x), y)  # the seed decides the mask
    assert not torch.equal(layer(x), y)
    layer.eval()
    assert torch.equal(layer(x), x)


def test_models_command_lists_every_model_with_its_recipe(capsys):
    import json

    from cli_helpers import run_cli
    from fmlab.runs import resolve

    code, out, _ = run_cli(capsys, "models", "--json")
    rows = json.loads(out)
    assert code == 0 and sorted(rows) == models.names()
    for name, row in rows.items():
        assert row["recipe"] == json.loads(json.dumps(models.recipe(name)))
        trained = models.build(name, **resolve([("t", {"model": name})]).model_args)  # what its recipe trains
        assert row["params"] == models.count_parameters(trained) == models.count_parameters(models.build(name))
    assert rows["cnn"]["params"] == 173_690  # one name, one network: 16-32-64, FC 256
    code, text, _ = run_cli(capsys, "models")
    assert code == 0 and all(f"{name} (" in text for name in models.names()) and "recipe: " in text
