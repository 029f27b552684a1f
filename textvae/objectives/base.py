"""What every objective returns, and the registry mapping recipe `type:` names to objectives."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

OBJECTIVES: dict[str, Callable] = {}


def objective(name: str):
    """Register an objective factory `(ObjectiveConfig, steps_per_epoch, epochs) -> objective`."""

    def register(fn):
        OBJECTIVES[name] = fn
        return fn

    return register


@dataclass
class ObjectiveOutput:
    """`loss` is what is minimised (mean over the batch); `terms` are per-batch sums for logging."""

    loss: torch.Tensor
    terms: dict[str, float] = field(default_factory=dict)
