"""The checks behind the report's explanations, calibration and robustness claims: each can fail."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fmlab.evaluation import calibration, robustness, trust
from fmlab.evaluation.explain import Explainer
from test_explain import quadrant_model


class EdgeDetector(Explainer):
    """A deliberately broken explainer: the input's edge strength, whatever the model."""

    def maps(self, net, x, target, baseline=0.0):
        kx = torch.tensor([[[[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]]])
        gx, gy = F.conv2d(x, kx, padding=1), F.conv2d(x, kx.transpose(2, 3), padding=1)
        return (gx**2 + gy**2).sqrt()[:, 0].detach()


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small CNN trained on images whose class is the row of a bright band, with its predictions."""
    from synthetic import images

    rng = np.random.default_rng(0)
    labels = np.arange(600) % 10
    x = torch.from_numpy(images(labels, rng)).float().unsqueeze(1) / 255
    y = torch.from_numpy(labels)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1),
                        nn.ReLU(), nn.Flatten(), nn.Linear(8 * 14 * 14, 10))
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(40):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        assert (net(x).argmax(1) == y).float().mean() > 0.9
    return net, x[:40], y[:40]


def test_the_randomisation_check_fails_a_broken_explainer_and_passes_a_real_one(trained):
    net, x, y = trained
    broken = trust.randomisation(net, EdgeDetector("saliency"), x, y, 0.0)
    real = trust.randomisation(net, Explainer("gradcam", "4"), x, y, 0.0)
    assert not broken["passes"] and broken["final_rank_correlation"] > 0.99
    assert all(step["rank_correlation"] > 0.99 for step in broken["steps"])  # no layer changes an edge map
    assert real["passes"] and real["final_rank_correlation"] < trust.SANITY_THRESHOLD
    assert [step["layer"] for step in real["steps"]] == ["6", "3", "0"]  # output layer first


def test_faithfulness_beats_random_only_for_a_map_of_the_evidence():
    model, _ = quadrant_model()
    x = torch.rand(30, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    target = torch.full((30,), 3)
    right = torch.zeros(30, 28, 28)
    right[:, :14, :14] = 1 + torch.rand(30, 14, 14)  # the quadrant the model reads
    wrong = torch.zeros(30, 28, 28)
    wrong[:, 14:, 14:] = 1 + torch.rand(30, 14, 14)  # a quadrant it ignores
    good, bad = trust.faithfulness(model, x, target, right, 0.0), trust.faithfulness(model, x, target, wrong, 0.0)
    assert good["beats_random"] and good["margin"]["ci_low"] > 0.2
    assert not bad["beats_random"] and bad["margin"]["mean"] < 0
    assert good["images"] == 30 and good["deletion"]["mean"] < good["random_deletion"]["mean"]


def test_analysis_chooses_a_faithful_explainer_that_passes_and_says_so(trained):
    net, x, y = trained
    options = [EdgeDetector("saliency"), Explainer("gradcam", "4"), Explainer("hirescam", "1")]
    analysis = trust.analyse(net, "cnn", 0.0, (x[:20], y[:20]), (x[20:], y[20:]), options=options)
    assert analysis.explainer in options[1:] and analysis.sanity["passes"]
    broken = next(c for c in analysis.candidates if c["method"] == "saliency")
    assert not broken["passes"]
    summary = analysis.summary()
    assert summary["explains"] == (summary["faithfulness"]["beats_random"] and summary["sanity"]["passes"])
    assert ("explains this model" in analysis.verdict()) == analysis.explains


def test_agreement_of_identical_independent_and_per_class_maps():
    rng = np.random.default_rng(0)
    a = rng.random((40, 28, 28))
    labels = np.arange(40) % 4
    everywhere = np.ones((40, 28, 28), bool)
    same = trust.agreement(a, a.copy(), everywhere, labels, ["a", "b", "c", "d"])
    other = trust.agreement(a, rng.random((40, 28, 28)), everywhere, labels, ["a", "b", "c", "d"])
    assert same["rank_correlation"]["mean"] == pytest.approx(1.0) and same["top_overlap"]["mean"] == 1.0
    assert abs(other["rank_correlation"]["mean"]) < 0.05 and other["top_overlap"]["mean"] < 0.2
    assert set(same["per_class"]) == {"a", "b", "c", "d"}
    flat = trust.rank_correlation(np.zeros((2, 28, 28)), a[:2], everywhere[:2])
    assert list(flat) == [0.0, 0.0]  # a constant map ranks nothing


def test_unrelated_sparse_maps_score_zero_and_the_background_is_left_out():
    """Maps that mark a random half of a garment's pixels each (as ReLU-clamped gradient maps do): unrelated,
    they must score about 0, not the -0.5 a comparison over the pixels either map marks gives; two maps alike
    on the garment score 1 however they differ on the black background."""
    rng = np.random.default_rng(0)
    images = np.zeros((200, 1, 28, 28), np.float32)
    images[:, :, 4:24, 6:22] = 1.0  # a garment on black
    mask = trust.garment(torch.from_numpy(images), 0.0)
    assert mask.sum() == 200 * 20 * 16

    def sparse() -> np.ndarray:
        return rng.random((200, 28, 28)) * (rng.random((200, 28, 28)) < 0.5) * mask

    a, b = sparse(), sparse()
    assert abs(trust.rank_correlation(a, b, mask).mean()) < 0.02
    background = a + 5 * rng.random((200, 28, 28)) * ~mask
    assert trust.rank_correlation(a, background, mask) == pytest.approx(np.ones(200))


# ---- temperature scaling ---------------------------------------------------------------------------------

def test_temperature_scaling_recovers_the_temperature_and_lowers_validation_nll():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 4000)
    logits = rng.normal(size=(4000, 10))
    logits[np.arange(4000), labels] += 2.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(10, p=p) for p in probs])  # calibrated at T = 1 by construction
    overconfident = 3.0 * logits
    t = calibration.fit_temperature(overconfident, labels)
    assert t == pytest.approx(3.0, rel=0.1)
    assert calibration.nll(overconfident, labels, t) < calibration.nll(overconfident, labels) - 0.1
    scaled = calibration.scaled_probs(overconfident, t)
    assert np.allclose(scaled.sum(1), 1) and np.array_equal(scaled.argmax(1), overconfident.argmax(1))


def test_calibration_never_reads_the_test_labels(tmp_path):
    from dataclasses import replace

    from fmlab.evaluation.runner import calibrate, open_run
    from synthetic import make_data, trained_run

    data = make_data(200, 100)
    run = open_run(trained_run(tmp_path / "run", "logreg", data), data, torch.device("cpu"))
    poisoned = replace(data, y_test=np.roll(data.y_test, 3))
    clean, dirty = calibrate(run, data, data.y_test), calibrate(run, poisoned, poisoned.y_test)
    assert clean["temperature"] == dirty["temperature"] and clean["val_nll_after"] == dirty["val_nll_after"]
    assert clean["val_nll_after"] <= clean["val_nll_before"]
    assert clean["ece_before"] != dirty["ece_before"]  # the test numbers do use the test labels


# ---- robustness ------------------------------------------------------------------------------------------

def test_perturbations_move_turn_and_perturb_as_named():
    image = np.zeros((1, 28, 28), np.uint8)
    image[0, 10:14, 10:14] = 255
    assert np.array_equal(robustness.shifted(image, 2, -3)[0, 12:16, 7:11], image[0, 10:14, 10:14])
    assert robustness.shifted(image, 2, -3).sum() == image.sum()
    assert np.array_equal(robustness.rotated(image, 0.0), image)
    assert robustness.rotated(image, 90.0)[0, 10:14, 10:14].sum() == 0  # the block left the top-left quadrant
    noisy = robustness.noisy(image, 0.1, seed=0)
    assert noisy.dtype == np.uint8 and 0 < np.abs(noisy.astype(int) - image).mean() < 40


def test_robustness_separates_a_shift_invariant_classifier_from_a_pixel_exact_one():
    from synthetic import images

    labels = np.arange(200) % 10
    x = images(labels, np.random.default_rng(0))
    rows = 2 + 2 * np.arange(10)  # the class is the row of the band (synthetic.images)

    def by_row_anywhere(batch: np.ndarray) -> np.ndarray:  # the band's row from row sums: blind to left/right
        return batch.astype(float).sum(2)[:, rows + 1].argmax(1)

    def exact_pixel(batch: np.ndarray) -> np.ndarray:  # reads one pixel per class: breaks when anything moves
        return np.argmax(batch[:, rows + 1, 4].astype(float), axis=1)

    invariant, exact = (robustness.robustness(f, x, labels) for f in (by_row_anywhere, exact_pixel))
    assert invariant["clean"] == exact["clean"] == 1.0
    assert exact["shift"]["4"] < invariant["shift"]["4"]
    assert "pp when shifted by 2 pixels" in robustness.sentence("m", exact)


@pytest.mark.parametrize("corr,verdict", [((0.25, 0.22, 0.28), "as much as one model agrees with itself"),
                                          ((0.05, 0.03, 0.07), "less than one model agrees with itself"),
                                          ((0.00, -0.01, 0.02), "no more than unrelated maps")])
def test_the_agreement_sentence_reads_the_level_against_seeds_and_chance(corr, verdict):
    from fmlab.evaluation.comparison import agreement_sentence

    def level(mean, low, high):
        return {"rank_correlation": {"mean": mean, "ci_low": low, "ci_high": high}, "top_overlap": {"mean": 0.2},
                "images": 200, "per_class": {"Bag": {"rank_correlation": mean}}}

    result = {**level(*corr), "explainers": "Guided Grad-CAM"}
    assert verdict in agreement_sentence("a", "b", result, {"a": level(0.27, 0.24, 0.30), "b": level(0.12, 0.1, 0.14)})
