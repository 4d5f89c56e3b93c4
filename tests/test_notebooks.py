"""notebooks/lenet_vs_simple.ipynb, brief 004 end to end through the public API, executed at its test budget."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_the_lenet_vs_simple_notebook_runs_the_brief_and_reports_its_numbers(tmp_path, real_data, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("FMLAB_NOTEBOOK_BUDGET", "test")
    monkeypatch.setenv("FMLAB_NOTEBOOK_OUT", str(tmp_path / "out"))
    nb = nbformat.read(ROOT / "notebooks" / "lenet_vs_simple.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    results = json.loads(text.split("RESULTS ", 1)[1])
    simple, lenet = results["simplified"], results["LeNet-5"]
    assert simple["params"] < lenet["params"]
    for model in (simple, lenet):
        assert 0.6 < model["accuracy"] < 1  # 3,000 images, 2 epochs: well above chance, not a full run
        assert len(model["roc_auc_per_class"]) == 10 and all(0.5 < a <= 1 for a in model["roc_auc_per_class"])
        assert model["roc_auc_macro"] == pytest.approx(sum(model["roc_auc_per_class"]) / 10)
        assert model["explains"] is True  # each map beat random order and failed to survive randomisation
        assert set(model["best_params"]) == {"lr", "batch_size", "l2"}  # the grid the brief asks for, per model
        assert model["best_params"]["lr"] in (3e-3, 1e-2) and model["best_params"]["l2"] in (0.0, 1e-4)
    images = sum("image/png" in o.get("data", {}) for o in outputs)
    assert images >= 5  # grid sensitivity, two ROC panels, the Input | simplified | LeNet-5 view
    assert f"LeNet-5 reaches {lenet['accuracy']:.2%}" in "".join(
        str(o.get("data", {}).get("text/markdown", "")) for o in outputs)
    assert (tmp_path / "out" / "comparison" / "comparison.png").is_file()
    assert os.listdir(tmp_path / "out" / "comparison" / "LeNet-5")
