"""The one path every optimiser step takes, the model's (update rules) and an objective's own (WAE-GAN's
discriminator): average the gradients over data-parallel processes, clip them, and step unless the non-finite
guard skips. A leaf: it imports only the collectives and the guard, so objectives and training both use it."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from textvae.training.distributed import average_gradients
from textvae.training.guards import NonFiniteGuard, grad_norm


def clip_gradients(params: list[torch.nn.Parameter], clip: float | None) -> torch.Tensor:
    """Average the gradients over data-parallel processes (nothing to do in one), then clip their total norm;
    returns that norm (before clipping), so the parameters stay the same on every process."""
    average_gradients(params)
    if clip is None:
        return grad_norm(params)
    return torch.nn.utils.clip_grad_norm_(params, clip)


def guarded_step(
    params: list[torch.nn.Parameter],
    optimizers: Sequence[torch.optim.Optimizer],
    loss: torch.Tensor,
    guard: NonFiniteGuard,
    clip: float | None = None,
    step: int | None = None,
    part: str = "model",
) -> bool:
    """Average and clip the gradients of `params`, then step the optimisers together unless `guard` finds `loss`
    or a gradient non-finite (counted under `part`); returns whether they stepped."""
    norm = clip_gradients(params, clip)
    if not guard.finite(norm, loss, params, step=step, part=part):
        return False
    for optimizer in optimizers:
        optimizer.step()
    return True
