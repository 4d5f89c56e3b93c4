"""Training progress: a rich bar on a terminal, one plain line per epoch otherwise."""

from __future__ import annotations

import sys
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class Reporter:
    def __init__(self, epochs: int, steps: int, enabled: bool | None = None) -> None:
        self.epochs, self.steps = epochs, steps
        self.enabled = True if enabled is None else enabled
        self.bar: Progress | None = None
        if self.enabled and sys.stderr.isatty():
            self.bar = Progress(
                TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task("train", total=steps, epoch=0, epochs=epochs, stats="")

    def start_epoch(self, epoch: int) -> None:
        if self.bar is not None:
            self.bar.reset(self.task, total=self.steps, epoch=epoch, stats="")

    def batch(self, loss: float, acc: float, images_per_s: float) -> None:
        if self.bar is not None:
            stats = f"loss {loss:.3f} acc {acc:.2%} {images_per_s:,.0f} img/s"
            self.bar.update(self.task, advance=1, stats=stats)

    def end_epoch(self, r: dict[str, Any]) -> None:
        if not self.enabled:
            return
        val = f"val loss {r['val_loss']:.4f} acc {r['val_acc']:.2%}  " if "val_acc" in r else ""
        line = (
            f"epoch {int(r['epoch'])}/{self.epochs}  train loss {r['train_loss']:.4f} acc {r['train_acc']:.2%}  "
            f"{val}lr {r['lr']:.2e}  {r['seconds']:.1f}s"
        )
        (self.bar.console.print if self.bar is not None else lambda s: print(s, file=sys.stderr, flush=True))(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
