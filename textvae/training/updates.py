"""Update rules: how one training step uses the objective. Looked up by the recipe's `update.type`."""

from __future__ import annotations

from collections.abc import Callable

import torch

from textvae.data.batching import TextBatch
from textvae.registry import Registry

UPDATES: Registry[Callable] = Registry("update rule")
update_rule = UPDATES.register


def clip_and_step(params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer, clip: float | None) -> None:
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(params, clip)
    optimizer.step()


@update_rule("joint")
class JointUpdate:
    """The plain step: one gradient step on encoder and decoder together."""

    def __init__(self, model, objective, optimizer: torch.optim.Optimizer, clip: float | None) -> None:
        self.model = model
        self.objective = objective
        self.optimizer = optimizer
        self.clip = clip
        self.params = [p for p in model.parameters() if p.requires_grad]

    def __call__(self, batch: TextBatch, step: int) -> dict[str, float]:
        self.optimizer.zero_grad(set_to_none=True)
        out = self.objective(self.model, batch, step)
        out.loss.backward()
        clip_and_step(self.params, self.optimizer, self.clip)
        return {"loss": out.loss.item() * len(batch), **out.terms}
