"""Priors p(z)."""

from __future__ import annotations

import torch
from torch import nn

from textvae.models.posteriors import LOG_2PI


class StandardNormal(nn.Module):
    """p(z) = N(0, I)."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim

    def sample(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.randn(n, self.latent_dim, device=device)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Sum over the last (latent) dimension."""
        return -0.5 * (z**2 + LOG_2PI).sum(-1)


PRIORS: dict[str, type[nn.Module]] = {"standard_normal": StandardNormal}
