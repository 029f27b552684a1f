"""Snapshots of approximate against model posterior means during training (He et al. 2019, Fig. 2)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from textvae.config import PosteriorMeanPlotConfig
from textvae.data.batching import TokenizedSplit
from textvae.errors import TextVAEError
from textvae.evaluation.posterior_mean import GRID_DIMS, posterior_means
from textvae.reports.posterior_plot import Snapshot, plot_posterior_means, save_snapshots_json

PLOT_FILE = "posterior_mean.png"
DATA_FILE = "posterior_mean.json"


class PosteriorMeanTracker:
    """E_q[z|x] and E_p[z|x] of the first `cfg.points` documents of a split, at chosen update steps.

    `seconds` is the time spent here, which the trainer leaves out of its training time.
    """

    def __init__(
        self, model, split: TokenizedSplit, cfg: PosteriorMeanPlotConfig, batch_size: int, run_dir: Path
    ) -> None:
        if model.latent_dim not in GRID_DIMS:
            raise TextVAEError(
                f"train.posterior_mean_plot needs a 1-d or 2-d latent, this model has {model.latent_dim}"
            )
        self.model = model
        self.split = split
        self.cfg = cfg
        self.batch_size = batch_size
        self.run_dir = Path(run_dir)
        self.snapshots: list[Snapshot] = []
        self.seconds = 0.0

    @contextlib.contextmanager
    def _timed(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start

    def wants(self, step: int) -> bool:
        """Whether `cfg.at_steps` asks for a snapshot after update step `step`."""
        return step in self.cfg.at_steps

    def snapshot(self, label: str) -> None:
        """Compute both posterior means now (the model's training mode is kept) and store them."""
        with self._timed():
            approx, exact = posterior_means(self.model, self.split, self.cfg.points, self.cfg, self.batch_size)
            self.snapshots.append((label, approx.numpy(), exact.numpy()))

    def state_dict(self) -> list[dict]:
        """The snapshots so far (a checkpoint keeps them)."""
        return [
            {"label": label, "approx": torch.from_numpy(approx), "exact": torch.from_numpy(exact)}
            for label, approx, exact in self.snapshots
        ]

    def load_state_dict(self, state: list[dict]) -> None:
        self.snapshots = [(s["label"], s["approx"].numpy(), s["exact"].numpy()) for s in state]

    def save(self) -> None:
        """Write run_dir/posterior_mean.json and, with at least one snapshot, run_dir/posterior_mean.png."""
        with self._timed():
            save_snapshots_json(self.snapshots, self.run_dir / DATA_FILE)
            if self.snapshots:
                plot_posterior_means(self.snapshots, self.run_dir / PLOT_FILE)
