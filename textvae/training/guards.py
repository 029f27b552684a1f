"""Non-finite guards: an optimiser step whose loss or gradients are not finite is skipped, counted and logged.

After `limit` skipped steps in a row of one part (the update rule's steps, or WAE-GAN's discriminator's) training
stops with a one-line `NonFiniteError`. Under data-parallel training every process takes the same decision.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch

from textvae.errors import TextVAEError
from textvae.training.distributed import reduce_sums, world_size

logger = logging.getLogger(__name__)

DEFAULT_LIMIT = 10  # the recipe's train.max_nonfinite default
HINTS = {
    "model": "lower optim.lr, set optim.clip",
    "discriminator": "lower objective.discriminator.lr",
}


class NonFiniteError(TextVAEError):
    """Training stopped: too many optimiser steps in a row had a non-finite loss or gradient."""


def grad_norm(params: Iterable[torch.nn.Parameter]) -> torch.Tensor:
    """The total 2-norm of the parameters' gradients (0 when none has one); inf or nan when one is not finite."""
    return torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])


def _locally_finite(norm: torch.Tensor, loss: torch.Tensor | None) -> bool:
    """Whether the gradient norm and this process's loss are finite (one device sync)."""
    ok = torch.isfinite(norm)
    if loss is not None:
        ok = ok & torch.isfinite(loss.detach()).all()
    return bool(ok)


def _agreed_finite(norm: torch.Tensor, loss: torch.Tensor | None) -> bool:
    """`_locally_finite` on every process: the gradients are averaged (the same everywhere) but a loss is local,
    so one process's non-finite loss makes every process skip."""
    finite = _locally_finite(norm, loss)
    if world_size() == 1 or loss is None:
        return finite
    return reduce_sums({"nonfinite": float(not finite)})["nonfinite"] == 0


class NonFiniteGuard:
    """Decides whether an optimiser step may go ahead, and counts the steps it skips.

    `skipped`: steps skipped over the run (every part). `in_a_row[part]`: the current run of consecutive skipped
    steps of a part, so that one part's finite steps cannot hide another's failures.
    """

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        if limit < 1:
            raise ValueError(f"a non-finite guard needs a limit of at least 1, not {limit}")
        self.limit = limit
        self.skipped = 0
        self.in_a_row: dict[str, int] = {}

    def finite(
        self,
        norm: torch.Tensor,
        loss: torch.Tensor | None,
        params: Iterable[torch.nn.Parameter],
        step: int | None = None,
        part: str = "model",
    ) -> bool:
        """Call after the gradients are averaged and clipped, before `optimizer.step()`, with their total `norm`
        (see `grad_norm`). True: step. False: the loss or a gradient is not finite; the parameters' gradients are
        dropped (nothing can step on them) and the skip is counted and logged. Raises `NonFiniteError` at the
        `limit`-th skip in a row of `part`; `step` (the update step) only goes into the messages."""
        if _agreed_finite(norm, loss):
            self.in_a_row[part] = 0
            return True
        for param in params:
            param.grad = None
        self._count(part, step)
        return False

    def _count(self, part: str, step: int | None) -> None:
        self.skipped += 1
        run = self.in_a_row[part] = self.in_a_row.get(part, 0) + 1
        at = "" if step is None else f" at update step {step}"
        logger.warning(
            "skipped a %s update%s: non-finite loss or gradient (%d in a row, %d in all)", part, at, run, self.skipped
        )
        if run >= self.limit:
            last = "" if step is None else f" (last at update step {step})"
            hint = HINTS.get(part, "lower the learning rate")
            raise NonFiniteError(
                f"training stopped: {run} {part} updates in a row had a non-finite loss or gradient{last}; "
                f"{hint}, or raise train.max_nonfinite"
            )

    def state_dict(self) -> dict:
        """The counters (JSON-able), for checkpoints."""
        return {"skipped": self.skipped, "in_a_row": dict(self.in_a_row)}

    def load_state_dict(self, state: dict) -> None:
        self.skipped = int(state["skipped"])
        self.in_a_row = {part: int(run) for part, run in state["in_a_row"].items()}
