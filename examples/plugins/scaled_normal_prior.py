"""A textvae plugin: the prior p(z) = N(0, s² I), a standard normal of another scale.

    textvae train examples/plugins/scaled_normal.yaml --plugin examples/plugins/scaled_normal_prior.py -o runs/scaled

The whole prior is this file: its recipe section (`model.prior: {type: scaled_normal, scale: s}`) and the prior,
both registered under one name. Nothing in textvae is edited. The KL to a diagonal Gaussian posterior has a closed
form; at s = 1 it is the standard normal's, to the last bit.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from textvae.config import PriorSection
from textvae.models.posteriors import LOG_2PI, DiagonalGaussian
from textvae.models.priors import Prior
from textvae.registries import PRIORS


class ScaledNormalConfig(PriorSection):
    """`model.prior: {type: scaled_normal, scale: s}`: N(0, s² I), nothing to learn.

    Free bits clamp the per-dimension KL to N(0, 1) (`per_dimension_kl`), which is not this prior's KL for s ≠ 1:
    the ELBO refuses them with this prior.
    """

    example: ClassVar = {"scale": 2.0}  # what the registry-driven tests train with

    type: Literal["scaled_normal"] = "scaled_normal"
    scale: float = Field(1.0, gt=0)  # s, the standard deviation of every latent dimension


class ScaledNormal(Prior):
    """p(z) = N(0, s² I); the KL to a diagonal Gaussian is exact (no Monte Carlo samples)."""

    def __init__(self, latent_dim: int, scale: float, kl_samples: int = 1) -> None:
        super().__init__(latent_dim, kl_samples)
        self.scale = scale

    def sample(self, n: int, device: torch.device | str | None = None) -> torch.Tensor:
        return self.scale * torch.randn(n, self.latent_dim, device=self._device(device))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return -0.5 * ((z / self.scale) ** 2 + LOG_2PI + 2 * math.log(self.scale)).sum(-1)

    def kl(self, posterior: DiagonalGaussian, z: torch.Tensor | None = None) -> torch.Tensor:
        """KL(N(μ, σ²) || N(0, s²)) = ½ Σ_d (μ_d²/s² + σ_d²/s² - log σ_d² - 1 + log s²), per document [B]."""
        var = self.scale**2
        mean, logvar = posterior.mean, posterior.logvar
        return (0.5 * (mean**2 / var + logvar.exp() / var - logvar - 1.0 + math.log(var))).sum(-1)


@PRIORS.register("scaled_normal", config=ScaledNormalConfig)
def make_scaled_normal(cfg: ScaledNormalConfig, latent_dim: int, encoder: nn.Module) -> ScaledNormal:
    return ScaledNormal(latent_dim, cfg.scale, cfg.kl_samples)
