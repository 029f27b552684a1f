"""A rich progress bar showing loss, KL and PPL during training."""

from __future__ import annotations

import math

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class RichProgress:
    """TrainerCallback that drives a rich progress bar (to stderr)."""

    def __init__(self, console: Console | None = None) -> None:
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.2f}{task.fields[terms]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
            transient=False,
        )
        self.task = None
        self.sums = {"loss": 0.0, "kl": 0.0, "rec": 0.0, "n": 0.0, "tokens": 0.0}

    def on_train_begin(self, total_steps: int, steps_per_epoch: int) -> None:
        self.steps_per_epoch = steps_per_epoch
        self.progress.start()
        self.task = self.progress.add_task("train", total=total_steps, epoch=1, loss=0.0, terms="")

    def on_step(self, step: int, metrics: dict) -> None:
        for key in ("loss", "kl", "rec", "n"):
            self.sums[key] = 0.98 * self.sums[key] + metrics.get(key, 0.0)
        self.sums["tokens"] = 0.98 * self.sums["tokens"] + metrics.get("n_tokens", 0)
        n = max(self.sums["n"], 1e-9)
        self.progress.update(
            self.task,
            completed=step,
            epoch=(step - 1) // self.steps_per_epoch + 1,
            loss=self.sums["loss"] / n,
            terms=self._terms(n) if "rec" in metrics else "",  # an objective without rec (a plugin's bound)
        )

    def _terms(self, n: float) -> str:
        """`  kl K  ppl P` (no PPL for image runs, which report no token counts: NLL per image only)."""
        terms = f"  kl {self.sums['kl'] / n:.2f}"
        if self.sums["tokens"] > 0:
            terms += f"  ppl {math.exp(min((self.sums['rec'] + self.sums['kl']) / self.sums['tokens'], 700)):.1f}"
        return terms

    def on_epoch_end(self, epoch: int, metrics: dict) -> None:
        """Epoch summaries are logged by the trainer."""

    def close(self) -> None:
        """Stop the bar; a bar never started prints nothing (an error before training stays one line)."""
        if self.task is not None:
            self.progress.stop()
