"""Training objectives, looked up by the recipe's `objective.type`."""

from __future__ import annotations

from pydantic import BaseModel

from textvae.objectives import elbo, mmd, wae, wae_gan  # noqa: F401  (register elbo, wae_mmd, infovae, wae_gan)
from textvae.objectives.base import OBJECTIVES, ObjectiveOutput


def build_objective(cfg: BaseModel, steps_per_epoch: int, epochs: int):
    """The objective a recipe names; schedules given in epochs are converted with `steps_per_epoch`."""
    return OBJECTIVES[cfg.type](cfg, steps_per_epoch, epochs)


__all__ = ["ObjectiveOutput", "build_objective"]
