"""Gaussian noise for reparameterised samples, drawn so that data-parallel training matches one process.

Inside `sharded(rank, world)` (the trainer's update steps on `world` ranks, each holding an equal shard of
the global batch), a draw for a shard of `rows` documents draws the noise of all `world · rows` documents
from the random state (the same on every rank) and keeps this rank's rows: every document gets the noise a
single process would give it. Outside (evaluation, generation, one process) it is `torch.randn`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

import torch

_SHARD: ContextVar[tuple[int, int]] = ContextVar("noise_shard", default=(0, 1))  # (rank, world size)


@contextlib.contextmanager
def sharded(rank: int, world: int) -> Iterator[None]:
    """Draws by `randn_rows` in this block are this rank's rows of the global batch's noise."""
    token = _SHARD.set((rank, world))
    try:
        yield
    finally:
        _SHARD.reset(token)


def randn_rows(rows: int, *shape: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
    """Standard normal noise [rows, *shape]; under `sharded`, rows r·rows .. (r+1)·rows of a [world·rows, ...] draw."""
    rank, world = _SHARD.get()
    eps = torch.randn(rows * world, *shape, device=device, dtype=dtype)
    return eps if world == 1 else eps[rank * rows : (rank + 1) * rows]
