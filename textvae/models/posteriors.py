"""Approximate posteriors q(z|x): diagonal Gaussian (VAE) and deterministic (WAE)."""

from __future__ import annotations

import math

import torch
from torch import nn

LOG_2PI = math.log(2 * math.pi)


def gaussian_log_density(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mean, diag exp(logvar)) summed over the last dimension; the three broadcast against each other."""
    return -0.5 * ((z - mean) ** 2 / logvar.exp() + logvar + LOG_2PI).sum(-1)


class DiagonalGaussian:
    """N(mean, diag(exp(logvar))) for a batch: mean and logvar are [B, Z]."""

    stochastic = True

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor) -> None:
        self.mean = mean
        self.logvar = logvar

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def rsample(self, n: int = 1) -> torch.Tensor:
        """Reparameterised samples, [B, n, Z]."""
        eps = torch.randn(self.mean.shape[0], n, self.mean.shape[1], device=self.mean.device, dtype=self.mean.dtype)
        return self.mean.unsqueeze(1) + eps * self.std.unsqueeze(1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z|x) for z of shape [B, n, Z] -> [B, n]."""
        return gaussian_log_density(z, self.mean.unsqueeze(1), self.logvar.unsqueeze(1))

    def kl(self) -> torch.Tensor:
        """KL(q(z|x) || N(0, I)) per dimension, [B, Z]."""
        return 0.5 * (self.mean**2 + torch.exp(self.logvar) - self.logvar - 1.0)

    def entropy(self) -> torch.Tensor:
        """Differential entropy per example, [B]."""
        return 0.5 * (LOG_2PI + 1.0 + self.logvar).sum(-1)


class Deterministic:
    """A point mass at `mean` (deterministic WAE encoders); no density, no KL."""

    stochastic = False

    def __init__(self, mean: torch.Tensor) -> None:
        self.mean = mean

    def rsample(self, n: int = 1) -> torch.Tensor:
        return self.mean.unsqueeze(1).expand(-1, n, -1)


Posterior = DiagonalGaussian | Deterministic


class PosteriorHead(nn.Linear):
    """The encoder's last layer: a summary vector [B, H] -> q(z|x), Gaussian (mean, logvar) or deterministic."""

    def __init__(self, in_dim: int, latent_dim: int, kind: str = "gaussian", bias: bool = False) -> None:
        if kind not in ("gaussian", "deterministic"):
            raise ValueError(f"unknown posterior {kind!r}")
        super().__init__(in_dim, (2 if kind == "gaussian" else 1) * latent_dim, bias=bias)
        self.kind = kind

    def forward(self, summary: torch.Tensor) -> Posterior:  # type: ignore[override]
        out = super().forward(summary)
        if self.kind == "deterministic":
            return Deterministic(out)
        mean, logvar = out.chunk(2, dim=-1)
        return DiagonalGaussian(mean, logvar)
