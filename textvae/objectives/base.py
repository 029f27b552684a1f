"""The objective contract (what the trainer, the update rules and SA-VAE call), what every objective returns,
and the registry mapping recipe `type:` names to objectives."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch

from textvae.registries import OBJECTIVES

if TYPE_CHECKING:
    from textvae.data.batching import TextBatch
    from textvae.models.posteriors import Posterior
    from textvae.training.guards import NonFiniteGuard

objective = OBJECTIVES.register


@dataclass
class ObjectiveOutput:
    """`loss` is what is minimised (mean over the batch); `terms` are per-batch sums for logging."""

    loss: torch.Tensor
    terms: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class Objective(Protocol):
    """A training objective, built by its registered factory `(cfg, steps_per_epoch, epochs) -> Objective`.

    Every update rule calls `objective(model, batch, step)` for the loss it minimises (a mean over the batch's
    documents) and the per-batch sums it logs (`rec`, `kl`, ...); `step` is the update step, for schedules such
    as KL annealing. After each epoch the trainer compares `val_<selection_metric>` across epochs to keep the
    best model and decay the learning rate ("elbo_nll" for a VAE, "rec" for autoencoders and WAEs). Evaluation
    never calls the objective: IW-NLL, ELBO, KL, MI and AU come from the model itself.
    """

    selection_metric: str

    def __call__(self, model: torch.nn.Module, batch: TextBatch, step: int) -> ObjectiveOutput: ...


@runtime_checkable
class SemiAmortizedObjective(Objective, Protocol):
    """An objective SA-VAE (`update.type: savae`) can refine a posterior for: it calls
    `example_losses(model, batch, posterior, step)`, one loss per document as a function of the posterior's
    parameters, in its SVI steps, then `loss_from_posterior(...)` on the refined posterior for the update."""

    def example_losses(
        self, model: torch.nn.Module, batch: TextBatch, posterior: Posterior, step: int
    ) -> torch.Tensor: ...

    def loss_from_posterior(
        self, model: torch.nn.Module, batch: TextBatch, posterior: Posterior, step: int
    ) -> ObjectiveOutput: ...


@runtime_checkable
class StatefulObjective(Objective, Protocol):
    """An objective with parameters and an optimiser of its own (WAE-GAN's discriminator). The trainer saves
    `state_dict()` in every checkpoint and, on `--resume`, calls `load_state_dict(state, latent_dim, device)`
    (the objective builds its networks there). The update rule sets `guard` to its own non-finite guard, so the
    objective's optimiser steps skip and count non-finite losses and gradients as the model's steps do."""

    guard: NonFiniteGuard

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict, latent_dim: int, device: torch.device | str) -> None: ...
