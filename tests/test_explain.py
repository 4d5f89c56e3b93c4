import numpy as np
import pytest
import torch
from torch import nn

from fmlab.evaluation import explain
from fmlab.evaluation.explain import Column, Explainer, deletion_insertion, heatmap_grid, random_maps


class Mask(nn.Module):
    """Zero everything outside the top-left quadrant: the model sees nothing else."""

    def __init__(self) -> None:
        super().__init__()
        mask = torch.zeros(1, 1, 28, 28)
        mask[..., :14, :14] = 1
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask


class QuadrantCNN(nn.Module):
    """Class 3 evidence = brightness in the top-left quadrant (channel 0); channel 1 sees the whole image
    and counts against class 3, so a correct explanation must point at the top-left only."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
        self.act = nn.ReLU()
        self.mask = Mask()
        self.target = nn.Identity()  # the Grad-CAM layer: the (masked) feature maps
        self.head = nn.Linear(2, 10)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[:, 0, 1, 1] = 1.0  # both channels copy the pixel
            self.head.weight.zero_()
            self.head.bias.zero_()
            self.head.weight[3] = torch.tensor([40.0, -2.0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.act(self.conv(x))
        features = self.target(torch.cat([self.mask(a[:, :1]), a[:, 1:]], dim=1))
        return self.head(features.mean(dim=(2, 3)))


def quadrant_model() -> tuple[nn.Module, nn.Module]:
    model = QuadrantCNN().eval()
    return model, model.target


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def test_gradcam_nonnegative_28x28_and_in_the_evidence_region(images):
    model, _ = quadrant_model()
    target = torch.full((len(images),), 3)
    for method in ("gradcam", "hirescam"):
        maps = Explainer(method, "target").maps(model, images, target)
        assert maps.shape == (8, 28, 28)
        assert (maps >= 0).all()
        mass = maps.sum(dim=(1, 2))
        top_left = maps[:, :14, :14].sum(dim=(1, 2))
        assert (mass > 0).all()
        assert (top_left / mass > 0.9).all(), method


def test_layer_methods_on_a_plain_cnn():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 13 * 13, 10))
    x = torch.randn(5, 1, 28, 28)
    for method in ("gradcam", "hirescam", "guided_gradcam"):
        maps = Explainer(method, "1").maps(model.eval(), x, torch.arange(5))
        assert maps.shape == (5, 28, 28) and (maps >= 0).all(), method


def test_every_cnn_is_explained_at_each_listed_layer_and_the_rest_by_gradients():
    from fmlab import models

    for name in models.names():
        options = explain.candidates(name)
        layers = models.get(name).explain_layers
        if models.get(name).family == "cnn":
            assert {(e.method, e.layer) for e in options} == {(m, lay) for m in explain.LAYER_METHODS for lay in layers}
            net = models.build(name)
            for layer in layers:  # each listed layer exists and is a rectified (or tanh) feature map
                assert isinstance(net.get_submodule(layer), nn.ReLU | nn.Tanh | nn.MaxPool2d | nn.AvgPool2d)
        else:
            assert [e.method for e in options] == list(explain.INPUT_METHODS) and layers == ()


@pytest.mark.parametrize("method", ["saliency", "integrated_gradients"])
def test_gradient_attributions_shapes_and_region(images, method):
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()
    with torch.no_grad():
        model[1].weight.zero_()
        w = torch.zeros(28, 28)
        w[:14, :14] = 1.0
        model[1].weight[3] = w.flatten()
    maps = Explainer(method).maps(model, images, torch.full((8,), 3), baseline=0.0)
    assert maps.shape == (8, 28, 28) and (maps >= 0).all()
    assert maps[:, 14:, :].abs().sum() == 0 and maps[:, :, 14:].abs().sum() == 0
    assert maps[:, :14, :14].sum() > 0


def test_integrated_gradients_completeness_on_a_linear_model(images):
    # for a linear model IG = (x - baseline) * w exactly; positive part kept
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()
    maps = Explainer("integrated_gradients").maps(model, images, torch.full((8,), 2), baseline=0.0)
    want = (images[:, 0] * model[1].weight[2].view(28, 28)).clamp_min(0)
    assert torch.allclose(maps, want.detach(), atol=1e-5)


def test_deletion_and_insertion_favour_a_real_attribution(images):
    model, _ = quadrant_model()
    target = torch.full((len(images),), 3)
    maps = Explainer("gradcam", "target").maps(model, images, target)
    deletion, insertion = deletion_insertion(model, images, maps, target, baseline=0.0)
    rand_del, rand_ins = deletion_insertion(model, images, random_maps(maps.shape, seed=1), target, baseline=0.0)
    assert deletion.shape == insertion.shape == (8,)
    assert deletion.mean() < rand_del.mean() - 0.1 and insertion.mean() > rand_ins.mean() + 0.1


def test_deletion_ties_do_not_favour_the_top_left(images):
    # an all-zero map says nothing; ties must not be broken in raster order (which starts top-left)
    model, _ = quadrant_model()
    target = torch.full((len(images),), 3)
    flat, _ = deletion_insertion(model, images, torch.zeros(8, 28, 28), target, baseline=0.0)
    rand, _ = deletion_insertion(model, images, random_maps((8, 28, 28), seed=2), target, baseline=0.0)
    assert flat.mean() == pytest.approx(rand.mean(), abs=0.1)


def test_image_selection_is_seeded_and_one_per_class():
    labels = np.repeat(np.arange(10), 30)
    a = explain.pick_per_class(labels, 1, seed=0)
    assert sorted(labels[a]) == list(range(10))
    assert np.array_equal(a, explain.pick_per_class(labels, 1, seed=0))
    assert not np.array_equal(a, explain.pick_per_class(labels, 1, seed=1))
    preds = [labels.copy(), labels.copy()]
    preds[1][[5, 17, 200]] = 9 - labels[[5, 17, 200]]
    assert list(explain.pick_disagreements(preds, n=6)) == [5, 17, 200]
    assert list(explain.pick_disagreements(preds, n=6, exclude=np.array([17]))) == [5, 200]


def test_heatmap_grid_layout():
    imgs = np.zeros((3, 28, 28), dtype=np.uint8)
    cols = [Column(f"m{i}", np.random.default_rng(i).random((3, 28, 28)), ["a", "b", "c"]) for i in range(2)]
    fig = heatmap_grid(imgs, cols, ["r1", "r2", "r3"])
    assert len(fig.axes) == 3 * 3
    assert [ax.get_title() for ax in fig.axes[:3]] == ["Input", "m0", "m1"]
