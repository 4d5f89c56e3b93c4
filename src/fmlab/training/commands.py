"""`fmlab train`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from fmlab.errors import ConfigError

Opt = typer.Option


def parse_pairs(pairs: list[str]) -> dict[str, Any]:
    """`key=value` strings -> dict, values parsed as JSON when they parse (numbers, lists, booleans)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--arg expects key=value, got '{pair}'")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def train(
    model: Annotated[str | None, Opt(help="Model name: logreg, mlp, mlp-numpy, lenet5, simple-cnn, cnn.")] = None,
    config: Annotated[Path | None, Opt("--config", help="TOML file with training settings.")] = None,
    out: Annotated[Path, Opt(help="Run folder (must be new or empty, unless --resume or --force).")] = Path(
        "runs/train"),
    lr: Annotated[float | None, Opt()] = None,
    batch_size: Annotated[int | None, Opt()] = None,
    epochs: Annotated[int | None, Opt()] = None,
    optimizer: Annotated[str | None, Opt(help="sgd, adam or adamw.")] = None,
    momentum: Annotated[float | None, Opt()] = None,
    nesterov: Annotated[bool | None, Opt("--nesterov/--no-nesterov")] = None,
    weight_decay: Annotated[float | None, Opt()] = None,
    l1: Annotated[float | None, Opt()] = None,
    l2: Annotated[float | None, Opt(help="Explicit L2 penalty added to the loss.")] = None,
    dropout: Annotated[float | None, Opt()] = None,
    schedule: Annotated[str | None, Opt(help="none, step, cosine, onecycle or plateau.")] = None,
    label_smoothing: Annotated[float | None, Opt()] = None,
    augment: Annotated[bool | None, Opt("--augment/--no-augment")] = None,
    early_stopping: Annotated[int | None, Opt(help="Patience in epochs.")] = None,
    train_size: Annotated[int | None, Opt(help="Train on a stratified subset of this size.")] = None,
    val_size: Annotated[int | None, Opt()] = None,
    seed: Annotated[int | None, Opt()] = None,
    threads: Annotated[int | None, Opt(help="Intra-op threads (default: this machine's).")] = None,
    device: Annotated[str, Opt(help="auto, cpu, cuda or mps: where it trains (not part of the run's spec).")] = "auto",
    arg: Annotated[list[str] | None, Opt("--arg", help="Model argument key=value, e.g. hidden=[512,256].")] = None,
    data_dir: Annotated[Path | None, Opt("--data-dir")] = None,
    resume: Annotated[bool, Opt("--resume", help="Continue the interrupted run in --out, as it was.")] = False,
    force: Annotated[bool, Opt("--force", help="Replace the run already in --out.")] = False,
) -> None:
    """Train one model and write its spec, history, predictor checkpoint, test predictions and metrics."""
    from fmlab import api

    options = {
        "lr": lr, "batch_size": batch_size, "epochs": epochs, "optimizer": optimizer,
        "momentum": momentum, "nesterov": nesterov, "weight_decay": weight_decay, "l1": l1, "l2": l2,
        "dropout": dropout, "schedule": schedule, "label_smoothing": label_smoothing, "augment": augment,
        "early_stopping": early_stopping, "train_size": train_size, "val_size": val_size, "seed": seed,
        "threads": threads, "model_args": parse_pairs(arg) if arg else None,
    }
    run = api.train(model, config=config, out=out, device=device, data_dir=data_dir, resume=resume, force=force,
                    **{k: v for k, v in options.items() if v is not None})
    m = run.metrics
    typer.echo(
        f"{run.model}: {m['status']}, test accuracy {m['test_acc']:.2%} (loss {m['test_loss']:.4f}), "
        f"best epoch {m['best_epoch']}, {m['train_time_s']:.1f}s training, {m['params']:,} parameters -> {out}"
    )
