import numpy as np
import pytest
import torch
from torch import nn

from fmlab.evaluate import explain
from fmlab.evaluate.explain import Column, attribute, faithfulness, heatmap_grid, random_attribution


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
    model, layer = quadrant_model()
    target = torch.full((len(images),), 3)
    maps = attribute(model, images, target, "gradcam", layer)
    assert maps.shape == (8, 28, 28)
    assert (maps >= 0).all()
    mass = maps.sum(dim=(1, 2))
    top_left = maps[:, :14, :14].sum(dim=(1, 2))
    assert (mass > 0).all()
    assert (top_left / mass > 0.9).all()


def test_gradcam_on_a_conv_layer_of_a_plain_cnn():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 13 * 13, 10))
    x = torch.randn(5, 1, 28, 28)
    maps = attribute(model.eval(), x, torch.arange(5), "gradcam", model[1])
    assert maps.shape == (5, 28, 28) and (maps >= 0).all()


@pytest.mark.parametrize("method", ["saliency", "integrated_gradients"])
def test_gradient_attributions_shapes_and_region(images, method):
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()
    with torch.no_grad():
        model[1].weight.zero_()
        w = torch.zeros(28, 28)
        w[:14, :14] = 1.0
        model[1].weight[3] = w.flatten()
    maps = attribute(model, images, torch.full((8,), 3), method, baseline=0.0)
    assert maps.shape == (8, 28, 28) and (maps >= 0).all()
    assert maps[:, 14:, :].abs().sum() == 0 and maps[:, :, 14:].abs().sum() == 0
    assert maps[:, :14, :14].sum() > 0


def test_integrated_gradients_completeness_on_a_linear_model(images):
    # for a linear model IG = (x - baseline) * w exactly; positive part kept
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()
    maps = attribute(model, images, torch.full((8,), 2), "integrated_gradients", baseline=0.0)
    want = (images[:, 0] * model[1].weight[2].view(28, 28)).clamp_min(0)
    assert torch.allclose(maps, want.detach(), atol=1e-5)


def test_faithfulness_real_attribution_beats_random(images):
    model, layer = quadrant_model()
    target = torch.full((len(images),), 3)
    maps = attribute(model, images, target, "gradcam", layer)
    real = faithfulness(model, images, maps, target, baseline=0.0)
    rand = faithfulness(model, images, random_attribution(maps.shape, seed=1), target, baseline=0.0)
    assert real["deletion_auc"] < rand["deletion_auc"] - 0.1
    assert real["insertion_auc"] > rand["insertion_auc"] + 0.1
    assert real["steps"] == 20 and real["images"] == 8


def test_faithfulness_ties_do_not_favour_the_top_left(images):
    # an all-zero map says nothing; ties must not be broken in raster order (which starts top-left)
    model, _ = quadrant_model()
    target = torch.full((len(images),), 3)
    flat = faithfulness(model, images, torch.zeros(8, 28, 28), target, baseline=0.0)
    rand = faithfulness(model, images, random_attribution((8, 28, 28), seed=2), target, baseline=0.0)
    assert flat["deletion_auc"] == pytest.approx(rand["deletion_auc"], abs=0.1)


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
