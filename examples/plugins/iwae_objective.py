"""A textvae plugin: the IWAE bound (Burda et al. 2016, "Importance Weighted Autoencoders") as a training objective.

    loss = -E[log (1/k) Σ_i p(x, z_i) / q(z_i|x)],  z_1..z_k ~ q(z|x)

For k = 1 this is the ELBO; it tightens with k. Use it with

    textvae train examples/plugins/iwae.yaml --plugin examples/plugins/iwae_objective.py -o runs/iwae

The whole method is this file: its recipe section (`objective: {type: iwae, samples: k}`) and its objective,
both registered under one name. Nothing in textvae is edited.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field

from textvae.config import MethodSection, Recipe
from textvae.objectives.base import ObjectiveOutput
from textvae.registries import OBJECTIVES


class IWAEConfig(MethodSection):
    """`objective: {type: iwae, samples: k}`: the importance-weighted bound with k samples per document."""

    type: Literal["iwae"] = "iwae"
    samples: int = Field(5, ge=1)

    def check(self, recipe: Recipe) -> None:
        if recipe.model.posterior != "gaussian" or recipe.model.prior.type != "standard_normal":
            raise ValueError("objective.type iwae needs model.posterior gaussian and model.prior standard_normal")


class IWAE:
    """The k-sample importance-weighted bound; the best epoch is the one with the lowest validation ELBO-NLL."""

    selection_metric = "elbo_nll"

    def __init__(self, samples: int) -> None:
        self.samples = samples

    def __call__(self, model: torch.nn.Module, batch, step: int) -> ObjectiveOutput:
        return self.loss_from_posterior(model, batch, model.encode(batch.data, batch.lengths), step)

    def log_weights(self, model: torch.nn.Module, batch, posterior) -> torch.Tensor:
        """log p(x|z_i) + log p(z_i) - log q(z_i|x) for k samples per document, [B, k]."""
        z = posterior.rsample(self.samples)  # [B, k, Z]
        return model.log_likelihood(batch.data, z) + model.prior.log_prob(z) - posterior.log_prob(z)

    def example_losses(self, model: torch.nn.Module, batch, posterior, step: int) -> torch.Tensor:
        """The negative bound per document, [B] (what SA-VAE's SVI steps would minimise)."""
        return -(torch.logsumexp(self.log_weights(model, batch, posterior), dim=1) - math.log(self.samples))

    def loss_from_posterior(self, model: torch.nn.Module, batch, posterior, step: int) -> ObjectiveOutput:
        losses = self.example_losses(model, batch, posterior, step)
        return ObjectiveOutput(losses.mean(), {"iwae_bound": -losses.sum().item(), "n": len(batch)})


@OBJECTIVES.register("iwae", config=IWAEConfig)
def make_iwae(cfg: IWAEConfig, steps_per_epoch: int, epochs: int) -> IWAE:
    return IWAE(cfg.samples)
