"""Priors p(z): standard normal, a learnable mixture of Gaussians, the VampPrior.

Every prior has `sample(n)`, `log_prob(z)` (summed over the latent dimension) and `kl(posterior, z)`, the
KL(q(z|x) || p(z)) per document: in closed form where one exists, else by Monte Carlo. Each is registered in
`textvae.registries.PRIORS` with its recipe section (`model.prior`, a `PriorSection`) by a factory
`(section, latent_dim, encoder) -> Prior`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from textvae.config.sections import PriorSection
from textvae.models.posteriors import LOG_2PI, DiagonalGaussian, gaussian_log_density
from textvae.registries import PRIORS

if TYPE_CHECKING:
    from textvae.config.recipe import Recipe


class Prior(nn.Module):
    """Base: Monte Carlo KL from `log_prob`; subclasses give `sample` and `log_prob`."""

    def __init__(self, latent_dim: int, kl_samples: int = 1) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.kl_samples = kl_samples

    def sample(self, n: int, device: torch.device | str | None = None) -> torch.Tensor:
        raise NotImplementedError

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def grouped_sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """At least n samples as groups [K, m, Z] with group weights [K] (the MMD's view of the prior).

        One group of n by default; a mixture with learnable weights gives one group per component.
        """
        z = self.sample(n)
        return z.unsqueeze(0), torch.ones(1, device=z.device)

    def kl(self, posterior: DiagonalGaussian, z: torch.Tensor | None = None) -> torch.Tensor:
        """E_q[log q(z|x) - log p(z)] per document [B], averaged over z [B, n, Z] (fresh samples if None)."""
        if z is None:
            z = posterior.rsample(self.kl_samples)
        return (posterior.log_prob(z) - self.log_prob(z)).mean(1)

    def _device(self, device: torch.device | str | None) -> torch.device | str:
        if device is not None:
            return device
        param = next(self.parameters(), None)
        return "cpu" if param is None else param.device


class StandardNormalConfig(PriorSection):
    """`prior: standard_normal`: p(z) = N(0, I), nothing to learn."""

    per_dimension_kl: ClassVar = True

    type: Literal["standard_normal"] = "standard_normal"


class StandardNormal(Prior):
    """p(z) = N(0, I); the KL to a diagonal Gaussian is exact."""

    def sample(self, n: int, device: torch.device | str | None = None) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, device=self._device(device))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return -0.5 * (z**2 + LOG_2PI).sum(-1)

    def kl(self, posterior: DiagonalGaussian, z: torch.Tensor | None = None) -> torch.Tensor:
        return posterior.kl().sum(-1)


class MixturePriorConfig(PriorSection):
    """What the sections of mixture priors hold: the number of components."""

    components: int = Field(10, gt=0)  # mog: mixture components; vamp: pseudo-inputs


class MixtureOfGaussiansConfig(MixturePriorConfig):
    """`prior: {type: mog, components: K}`: a learnable mixture of K Gaussians."""

    example: ClassVar = {"components": 3}

    type: Literal["mog"] = "mog"


class MixtureOfGaussians(Prior):
    """p(z) = Σ_k π_k N(μ_k, diag σ_k²) with learnable weights, means and variances."""

    def __init__(self, latent_dim: int, components: int, kl_samples: int = 1) -> None:
        super().__init__(latent_dim, kl_samples)
        self.logits = nn.Parameter(torch.zeros(components))
        self.means = nn.Parameter(torch.empty(components, latent_dim))
        self.logvars = nn.Parameter(torch.zeros(components, latent_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Equal weights, unit variances, means drawn from N(0, I) so the components start apart."""
        with torch.no_grad():
            self.logits.zero_()
            self.logvars.zero_()
            self.means.normal_()

    @property
    def components(self) -> int:
        return self.means.shape[0]

    def component_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log π_k + log N(z; μ_k, σ_k²) for every component: z [..., Z] -> [..., K]."""
        return torch.log_softmax(self.logits, 0) + gaussian_log_density(z.unsqueeze(-2), self.means, self.logvars)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(self.component_log_prob(z), dim=-1)

    @property
    def weights(self) -> torch.Tensor:
        """The mixture weights π [K]."""
        return torch.softmax(self.logits, 0)

    def sample_component(self, k: int, n: int) -> torch.Tensor:
        """n samples from component k alone, [n, Z]."""
        return self.sample_each_component(n)[k]

    def grouped_sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """ceil(n / K) (at least 2) samples of every component with the mixture weights: differentiable in all
        of means, variances and weights."""
        return self.sample_each_component(max(2, math.ceil(n / self.components))), self.weights

    def sample_each_component(self, n: int) -> torch.Tensor:
        """n reparameterised samples from every component, [K, n, Z]."""
        eps = torch.randn(self.components, n, self.latent_dim, device=self.means.device)
        return self.means.unsqueeze(1) + eps * (0.5 * self.logvars).exp().unsqueeze(1)

    def sample(self, n: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Reparameterised given the component (drawn from π): gradients reach means and variances."""
        which = torch.multinomial(self.weights, n, replacement=True)
        eps = torch.randn(n, self.latent_dim, device=self.means.device)
        z = self.means[which] + eps * (0.5 * self.logvars[which]).exp()
        return z.to(self._device(device))


class VampPriorConfig(MixturePriorConfig):
    """`prior: {type: vamp, components: K, pseudo_length: L}`: the VampPrior (Tomczak & Welling 2018) on K
    pseudo-documents of L tokens; text models only."""

    example: ClassVar = {"components": 3, "pseudo_length": 2}

    type: Literal["vamp"] = "vamp"
    pseudo_length: int = Field(16, gt=0)  # tokens per pseudo-input (soft embeddings fed to the encoder)

    def check(self, recipe: Recipe) -> None:
        if recipe.model.modality != "text":
            raise ValueError("model.prior vamp learns pseudo-documents: text models only")


class VampPrior(Prior):
    """p(z) = 1/K Σ_k q(z | u_k) with K learnable pseudo-inputs u_k (Tomczak & Welling 2018).

    For text the pseudo-inputs are sequences of `pseudo_length` learnable input embeddings that the
    encoder reads in place of embedded tokens. The encoder is shared, not owned: it is held outside
    the module tree so its weights are saved once.
    """

    def __init__(self, latent_dim: int, encoder: nn.Module, components: int, length: int, kl_samples: int = 1):
        super().__init__(latent_dim, kl_samples)
        if not hasattr(encoder, "embedded"):
            raise TypeError(f"{type(encoder).__name__} cannot read pseudo-inputs (no `embedded` method)")
        self._encoder = (encoder,)  # a tuple keeps it out of this module's parameters and state dict
        self.pseudo_inputs = nn.Parameter(torch.empty(components, length + 2, encoder.embedding_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.pseudo_inputs.normal_(0.0, 0.1)

    @property
    def components(self) -> int:
        return self.pseudo_inputs.shape[0]

    @property
    def weights(self) -> torch.Tensor:
        """The mixture weights: 1/K each."""
        return torch.full((self.components,), 1.0 / self.components, device=self.pseudo_inputs.device)

    def mixture(self) -> DiagonalGaussian:
        """q(z | u_k) for every pseudo-input: a Gaussian with [K, Z] parameters."""
        encoder = self._encoder[0]
        lengths = torch.full((self.components,), self.pseudo_inputs.shape[1] - 2, device=self.pseudo_inputs.device)
        return encoder.embedded(self.pseudo_inputs, lengths)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        q = self.mixture()
        log_normal = gaussian_log_density(z.unsqueeze(-2), q.mean, q.logvar)  # [..., K]
        return torch.logsumexp(log_normal, dim=-1) - math.log(self.components)

    def sample_component(self, k: int, n: int) -> torch.Tensor:
        q = self.mixture()
        return q.mean[k] + torch.randn(n, self.latent_dim, device=q.mean.device) * q.std[k]

    def sample(self, n: int, device: torch.device | str | None = None) -> torch.Tensor:
        q = self.mixture()
        which = torch.randint(self.components, (n,), device=q.mean.device)
        z = q.mean[which] + torch.randn(n, self.latent_dim, device=q.mean.device) * q.std[which]
        return z.to(self._device(device))


@PRIORS.register("standard_normal", config=StandardNormalConfig)
def standard_normal(cfg: StandardNormalConfig, latent_dim: int, encoder: nn.Module) -> StandardNormal:
    return StandardNormal(latent_dim, cfg.kl_samples)


@PRIORS.register("mog", config=MixtureOfGaussiansConfig)
def mixture_of_gaussians(cfg: MixtureOfGaussiansConfig, latent_dim: int, encoder: nn.Module) -> MixtureOfGaussians:
    return MixtureOfGaussians(latent_dim, cfg.components, cfg.kl_samples)


@PRIORS.register("vamp", config=VampPriorConfig)
def vamp_prior(cfg: VampPriorConfig, latent_dim: int, encoder: nn.Module) -> VampPrior:
    return VampPrior(latent_dim, encoder, cfg.components, cfg.pseudo_length, cfg.kl_samples)


def build_prior(cfg: PriorSection, latent_dim: int, encoder: nn.Module | None) -> Prior:
    """The prior a recipe names (a language model gets the standard normal, never used); its parameters train
    unless `cfg.learnable` is false."""
    if encoder is None:
        return StandardNormal(latent_dim)
    prior = PRIORS[cfg.type](cfg, latent_dim, encoder)
    prior.requires_grad_(cfg.learnable)
    return prior
