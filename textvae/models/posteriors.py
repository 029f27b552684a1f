"""Approximate posteriors q(z|x): diagonal Gaussian (VAE) and deterministic (WAE)."""

from __future__ import annotations

import math

import torch

LOG_2PI = math.log(2 * math.pi)


class DiagonalGaussian:
    """N(mean, diag(exp(logvar))) for a batch: mean and logvar are [B, Z]."""

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
        var = torch.exp(self.logvar).unsqueeze(1)
        sq = (z - self.mean.unsqueeze(1)) ** 2 / var
        return -0.5 * (sq + self.logvar.unsqueeze(1) + LOG_2PI).sum(-1)

    def kl(self) -> torch.Tensor:
        """KL(q(z|x) || N(0, I)) per dimension, [B, Z]."""
        return 0.5 * (self.mean**2 + torch.exp(self.logvar) - self.logvar - 1.0)

    def entropy(self) -> torch.Tensor:
        """Differential entropy per example, [B]."""
        return 0.5 * (LOG_2PI + 1.0 + self.logvar).sum(-1)


class Deterministic:
    """A point mass at `mean` (deterministic WAE encoders); no density, no KL."""

    def __init__(self, mean: torch.Tensor) -> None:
        self.mean = mean

    def rsample(self, n: int = 1) -> torch.Tensor:
        return self.mean.unsqueeze(1).expand(-1, n, -1)
