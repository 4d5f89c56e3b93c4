"""`fmlab predict` and `fmlab export`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

Arg, Opt = typer.Argument, typer.Option


def predict(
    source: Annotated[Path, Arg(metavar="CHECKPOINT_OR_RUN_DIR", help="A run folder or a checkpoint file.")],
    images: Annotated[list[Path], Arg(metavar="IMAGE...", help="PNG/JPEG files, .npy arrays or IDX files.")],
    top_k: Annotated[int, Opt("--top-k", help="How many classes to show per image.")] = 3,
    as_json: Annotated[bool, Opt("--json", help="Print a JSON list, one object per image.")] = False,
    invert: Annotated[bool | None, Opt("--invert/--no-invert", help="Force inverting (dark object on a light "
                                       "background) or not; default: read a photo's background off its border.",
                                       show_default=False)] = None,
    gradcam: Annotated[Path | None, Opt("--gradcam", help="Write Grad-CAM overlays to this PNG (CNNs).")] = None,
) -> None:
    """Classify images with a trained model; exit 2 when any file could not be read (the rest still answer)."""
    from fmlab import api

    entries = api.predict(source, list(images), top_k=top_k, invert=invert, gradcam=gradcam)
    errors = [e for e in entries if "error" in e]
    if as_json:
        typer.echo(json.dumps(entries, indent=2, allow_nan=False))
    else:
        stacked = {e["file"] for e in entries if e.get("index", 0) > 0}
        for entry in entries:
            if "error" not in entry:
                typer.echo(_line(entry, entry["file"] in stacked))
        if gradcam is not None and len(errors) < len(entries):
            typer.echo(f"Grad-CAM overlay -> {gradcam}")
    for entry in errors:
        typer.echo(f"error: {entry['error']}".replace("\n", " "), err=True)
    if errors:
        raise typer.Exit(2)


def _line(entry: dict[str, Any], numbered: bool) -> str:
    name = f"{entry['file']}[{entry['index']}]" if numbered else entry["file"]
    # a file name with a newline (or another control character) must not be able to fake a result line
    name = "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)
    steps = "" if entry["preprocessing"] == "used as stored" else f"  [{entry['preprocessing']}]"
    return f"{name}: " + ", ".join(f"{t['class']} {t['probability']:.1%}" for t in entry["top"]) + steps


def export(
    run_dir: Annotated[Path, Arg(metavar="RUN_DIR", help="Run folder (or checkpoint file) to export.")],
    onnx: Annotated[Path, Opt("--onnx", help="Where to write the ONNX model.")],
    opset: Annotated[int, Opt("--opset", help="ONNX opset version.")] = 17,
    limit: Annotated[int | None, Opt("--limit", help="Verify on the first N test images only.")] = None,
    data_dir: Annotated[Path | None, Opt("--data-dir", help="Folder holding the Fashion-MNIST files.")] = None,
    as_json: Annotated[bool, Opt("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Export to ONNX (dynamic batch), verify against torch on the test set, report both runtimes' speed."""
    from fmlab import api

    report = api.export(run_dir, onnx, opset=opset, limit=limit, data_dir=data_dir)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(
        f"{report['model']} -> {report['onnx']} (opset {report['opset']}, input {report['input_shape']}, "
        f"{report['bytes']:,} bytes)\n"
        f"verified on {report['verified_images']:,} test images: max |torch - onnxruntime| = "
        f"{report['max_abs_diff']:.2e} (tolerance {report['tolerance']:g}), "
        f"{report['same_predictions']:.2%} same predictions\n"
        f"throughput (batch {report['batch_size']}, {report['threads']} threads): "
        f"torch {report['torch_images_per_s']:,.0f} images/s, "
        f"onnxruntime {report['onnxruntime_images_per_s']:,.0f} images/s"
    )
