"""Update rules: how one training step uses the objective. Looked up by the recipe's `update.type`.

An update rule is built from an `UpdateContext` and owns its optimiser(s). The trainer calls it once
per training batch, `set_lr` on He et al.'s lr decay, and `end_epoch` after validation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from textvae.config.recipe import MethodSection
from textvae.config.sections import OptimConfig
from textvae.data.batching import TextBatch
from textvae.objectives.base import Objective, StatefulObjective
from textvae.registries import UPDATES
from textvae.training.guards import DEFAULT_LIMIT, NonFiniteGuard
from textvae.training.stepping import guarded_step

update_rule = UPDATES.register

OPTIMIZERS = {
    "sgd": lambda params, c, lr: torch.optim.SGD(params, lr=lr, momentum=c.momentum, weight_decay=c.weight_decay),
    "adam": lambda params, c, lr: torch.optim.Adam(params, lr=lr, weight_decay=c.weight_decay),
}


def make_optimizer(params: list[torch.nn.Parameter], cfg: OptimConfig, lr: float) -> torch.optim.Optimizer:
    return OPTIMIZERS[cfg.type](params, cfg, lr)


def trainable(module: torch.nn.Module | None) -> list[torch.nn.Parameter]:
    return [] if module is None else [p for p in module.parameters() if p.requires_grad]


@dataclass
class UpdateContext:
    """What an update rule is built from."""

    model: torch.nn.Module
    objective: Objective
    optim: OptimConfig
    cfg: object  # the recipe's `update:` section (one of the UpdateConfig variants)
    lr: float
    sample_batch: Callable[[], TextBatch]  # a fresh random training batch (this process's share), on the device
    max_nonfinite: int = DEFAULT_LIMIT  # optimiser steps skipped in a row (non-finite loss or gradient) before stopping


def batch_terms(loss: torch.Tensor, terms: dict[str, float], batch: TextBatch) -> dict[str, float]:
    """An objective's per-batch terms plus the loss summed over the batch (what the trainer logs)."""
    return {"loss": loss.item() * len(batch), **terms}


class UpdateRule:
    """An update rule, registered with `@update_rule(name)` and built from an `UpdateContext`.

    The trainer calls `rule(batch, step)` once per training batch (it computes the objective, steps the
    optimisers through `clip_and_step`, which averages gradients over processes, clips them and skips
    non-finite steps, and returns the batch's terms to log), `set_lr(lr)` when He et al.'s decay lowers the
    learning rate, `end_epoch(metrics)` after each validation (extra fields to log, e.g. aggressive training
    switching off; validation MI is computed for it when `wants_val_mi`), and `state_dict()` /
    `load_state_dict()` for checkpoints (optimisers, the `resumable` attributes, the guard's counts).
    This base is the joint rule's machinery: one optimiser over all trainable parameters.
    """

    wants_val_mi = False  # the trainer computes validation MI each epoch when a rule needs it
    resumable: tuple[str, ...] = ()  # attributes besides the optimisers that change during training

    def __init__(self, ctx: UpdateContext) -> None:
        self.model = ctx.model
        self.objective = ctx.objective
        self.optim_cfg = ctx.optim
        self.cfg = ctx.cfg
        self.clip = ctx.optim.clip
        self.sample_batch = ctx.sample_batch
        self.params = trainable(ctx.model)
        self.guard = NonFiniteGuard(ctx.max_nonfinite)
        if isinstance(ctx.objective, StatefulObjective):  # an optimiser of its own (WAE-GAN's discriminator)
            ctx.objective.guard = self.guard
        self.set_lr(ctx.lr)

    def set_lr(self, lr: float) -> None:
        """Fresh optimiser(s) at `lr` (He et al.'s decay restarts the optimiser)."""
        self.optimizer = make_optimizer(self.params, self.optim_cfg, lr)

    def clip_and_step(
        self,
        params: list[torch.nn.Parameter],
        optimizers: Sequence[torch.optim.Optimizer],
        loss: torch.Tensor,
        step: int,
    ) -> bool:
        """Average and clip the gradients of `params`, then step the optimisers together unless the guard finds
        `loss` or a gradient non-finite; returns whether they stepped (`textvae.training.stepping`)."""
        return guarded_step(params, optimizers, loss, self.guard, self.clip, step)

    def state_dict(self) -> dict:
        """What a checkpoint keeps: every optimiser's state, the `resumable` fields, the guard's counts."""
        return {
            "optimizers": {
                name: v.state_dict() for name, v in vars(self).items() if isinstance(v, torch.optim.Optimizer)
            },
            "fields": {name: getattr(self, name) for name in self.resumable},
            "guard": self.guard.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        for name, optimizer_state in state["optimizers"].items():
            getattr(self, name).load_state_dict(optimizer_state)
        for name, value in state["fields"].items():
            setattr(self, name, value)
        self.guard.load_state_dict(state["guard"])

    def end_epoch(self, metrics: dict) -> dict:
        """Called after validation with the epoch's metrics; returns extra fields to log."""
        return {}

    def __call__(self, batch: TextBatch, step: int) -> dict[str, float]:
        raise NotImplementedError


class JointUpdateConfig(MethodSection):
    """One gradient step on encoder and decoder together."""

    type: Literal["joint"] = "joint"


@update_rule("joint", config=JointUpdateConfig)
class JointUpdate(UpdateRule):
    """The plain step: one gradient step on encoder and decoder together."""

    def __call__(self, batch: TextBatch, step: int) -> dict[str, float]:
        self.optimizer.zero_grad(set_to_none=True)
        out = self.objective(self.model, batch, step)
        out.loss.backward()
        self.clip_and_step(self.params, [self.optimizer], out.loss, step)
        return batch_terms(out.loss, out.terms, batch)


def build_update(ctx: UpdateContext) -> UpdateRule:
    return UPDATES[ctx.cfg.type](ctx)
