"""He et al. 2019 Fig. 2: approximate against model posterior means, one panel per snapshot and latent dimension."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from textvae.atomic import write_atomic

Snapshot = tuple[str, np.ndarray, np.ndarray]  # label, E_q[z|x] [N, Z], E_p[z|x] [N, Z]
MIN_LIMIT = 0.5  # axis half-width when every mean is near 0


def plot_posterior_means(snapshots: Sequence[Snapshot], path: Path) -> None:
    """A PNG grid: one column per snapshot, one row per latent dimension; x = E_q[z|x], y = E_p[z|x].

    All panels share square limits around 0, so the diagonal (a perfect encoder) is the same everywhere.
    """
    if not snapshots:
        raise ValueError("no posterior-mean snapshots to plot")
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    dims = snapshots[0][1].shape[1]
    limit = 1.05 * max(MIN_LIMIT, *(float(np.abs(m).max(initial=0)) for _, *means in snapshots for m in means))
    fig = Figure(figsize=(3 * len(snapshots), 3 * dims))
    axes = fig.subplots(dims, len(snapshots), squeeze=False, sharex=True, sharey=True)
    for col, (label, approx, exact) in enumerate(snapshots):
        for dim in range(dims):
            ax = axes[dim, col]
            ax.plot([-limit, limit], [-limit, limit], color="0.5", linewidth=0.8, linestyle="--")
            ax.scatter(approx[:, dim], exact[:, dim], s=4, alpha=0.5, color=f"C{dim}")
            ax.set(xlim=(-limit, limit), ylim=(-limit, limit), aspect="equal")
            ax.set_title(label if dims == 1 else f"{label}, z{dim + 1}", fontsize=9)
            ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("approximate posterior mean")
    for ax in axes[:, 0]:
        ax.set_ylabel("model posterior mean")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    write_atomic(path, buffer.getvalue())


def save_snapshots_json(snapshots: Sequence[Snapshot], path: Path) -> None:
    """The snapshots as JSON, so that a report can redraw the plot."""
    data = [{"label": label, "approx": approx.tolist(), "exact": exact.tolist()} for label, approx, exact in snapshots]
    write_atomic(path, json.dumps({"snapshots": data}).encode("utf-8"))


def load_snapshots_json(path: Path) -> list[Snapshot]:
    """Snapshots written by `save_snapshots_json`."""
    data = json.loads(Path(path).read_text())
    return [(s["label"], np.asarray(s["approx"]), np.asarray(s["exact"])) for s in data["snapshots"]]
