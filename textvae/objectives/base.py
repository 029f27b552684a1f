"""What every objective returns, and the registry mapping recipe `type:` names to objectives."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from textvae.registry import Registry

OBJECTIVES: Registry[Callable] = Registry("objective")
objective = OBJECTIVES.register


@dataclass
class ObjectiveOutput:
    """`loss` is what is minimised (mean over the batch); `terms` are per-batch sums for logging."""

    loss: torch.Tensor
    terms: dict[str, float] = field(default_factory=dict)
