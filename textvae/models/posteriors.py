"""Approximate posteriors q(z|x): diagonal Gaussian (VAE) and deterministic (WAE), registered as posterior kinds
(`textvae.registries.POSTERIORS`) under the names a recipe's `model.posterior` gives."""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from textvae.config.sections import posterior_kind
from textvae.noise import randn_rows
from textvae.registries import POSTERIORS

LOG_2PI = math.log(2 * math.pi)


def gaussian_log_density(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mean, diag exp(logvar)) summed over the last dimension; the three broadcast against each other."""
    return -0.5 * ((z - mean) ** 2 / logvar.exp() + logvar + LOG_2PI).sum(-1)


class PosteriorKind(Protocol):
    """What POSTERIORS registers under a `model.posterior` name: a posterior class that says what the encoder's
    head (`PosteriorHead`) produces for it and builds it from that output."""

    stochastic: bool  # a density q(z|x) (KL, IW-NLL, MI) rather than a point
    head_outputs: int  # the head's outputs per latent dimension

    def from_head(self, out: torch.Tensor, mean_norm: nn.Module | None) -> Posterior:
        """The posterior of the head's output [B, head_outputs·Z]; `mean_norm` is BN-VAE's normaliser or None."""
        ...


@POSTERIORS.register("gaussian")
class DiagonalGaussian:
    """N(mean, diag(exp(logvar))) for a batch: mean and logvar are [B, Z]."""

    stochastic = True
    head_outputs = 2  # mean, log-variance

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor) -> None:
        self.mean = mean
        self.logvar = logvar

    @classmethod
    def from_head(cls, out: torch.Tensor, mean_norm: nn.Module | None = None) -> DiagonalGaussian:
        """Means then log-variances; BN-VAE's `mean_norm` (Zhu et al. 2020) post-processes the means."""
        mean, logvar = out.chunk(2, dim=-1)
        if mean_norm is not None:
            mean = mean_norm(mean)
        return cls(mean, logvar)

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def rsample(self, n: int = 1) -> torch.Tensor:
        """Reparameterised samples, [B, n, Z]."""
        eps = randn_rows(self.mean.shape[0], n, self.mean.shape[1], device=self.mean.device, dtype=self.mean.dtype)
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


@POSTERIORS.register("deterministic")
class Deterministic:
    """A point mass at `mean` (deterministic WAE encoders); no density, no KL."""

    stochastic = False
    head_outputs = 1

    def __init__(self, mean: torch.Tensor) -> None:
        self.mean = mean

    @classmethod
    def from_head(cls, out: torch.Tensor, mean_norm: nn.Module | None = None) -> Deterministic:
        """The point itself (BN-VAE normalises Gaussian means only: the recipe refuses it here)."""
        return cls(out)

    def rsample(self, n: int = 1) -> torch.Tensor:
        return self.mean.unsqueeze(1).expand(-1, n, -1)


Posterior = DiagonalGaussian | Deterministic


class MeanBatchNorm(nn.Module):
    """BN-VAE (Zhu et al. 2020): posterior means batch-normalised per dimension, times a fixed γ plus a learned β.

    Across documents each dimension's mean then has variance γ² (running statistics at evaluation), so
    E_x[KL(q(z|x) || N(0, I))] ≥ Z·γ²/2 and the posterior cannot collapse onto the prior.
    """

    EPS = 1e-8  # not BatchNorm's 1e-5: the means of He et al.'s U(±0.01)-initialised encoders vary by ~1e-4

    def __init__(self, latent_dim: int, gamma: float) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(latent_dim, eps=self.EPS, affine=False)
        self.register_buffer("gamma", torch.tensor(float(gamma)))
        self.shift = nn.Parameter(torch.zeros(latent_dim))

    def forward(self, mean: torch.Tensor) -> torch.Tensor:
        flat = mean.reshape(-1, mean.shape[-1])
        if self.training and flat.shape[0] < 2:  # a batch of one has no spread: use the running statistics
            norm = self.norm
            normed = F.batch_norm(flat, norm.running_mean, norm.running_var, training=False, eps=norm.eps)
        else:
            normed = self.norm(flat)
        return (self.gamma * normed + self.shift).reshape(mean.shape)


class PosteriorHead(nn.Linear):
    """The encoder's last layer: a summary vector [B, H] -> q(z|x) of the posterior kind registered as `kind`
    (Gaussian: mean and logvar; deterministic: a point).

    `mean_norm` (a MeanBatchNorm, set by the model for BN-VAE) post-processes the Gaussian means.
    """

    def __init__(self, in_dim: int, latent_dim: int, kind: str = "gaussian", bias: bool = False) -> None:
        posterior = posterior_kind(kind)
        super().__init__(in_dim, posterior.head_outputs * latent_dim, bias=bias)
        self.kind = kind
        self.posterior: PosteriorKind = posterior
        self.mean_norm: nn.Module | None = None  # an instance attribute: a class one would hide the submodule

    def forward(self, summary: torch.Tensor) -> Posterior:  # type: ignore[override]
        with torch.autocast(summary.device.type, enabled=False):  # q(z|x) in fp32 under bf16 autocast
            return self._posterior(super().forward(summary.to(self.weight.dtype)))

    def _posterior(self, out: torch.Tensor) -> Posterior:
        return self.posterior.from_head(out, self.mean_norm)
