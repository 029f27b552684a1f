"""Objectives that match the aggregate posterior q(z) to the prior: WAE-MMD and InfoVAE.

WAE-MMD (Tolstikhin et al. 2018): rec + λ·MMD(q(z), p(z)), with a deterministic or stochastic encoder;
a stochastic one may add Bahuleyan et al. (2019)'s KL(N(μ, σ²) || N(μ, I)) (a KL to a unit Gaussian centred
on the posterior's own mean: it keeps σ from collapsing to 0 without pulling μ to 0) and Rubenstein et al.
(2018)'s L1 penalty on the log-variances, so that it stays stochastic.
InfoVAE (Zhao et al. 2019): rec + (1-α)·KL(q(z|x) || p(z)) + (α+λ-1)·MMD(q(z), p(z)); α = 1 is the MMD-VAE.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import ConfigDict, Field, model_validator

from textvae.config.recipe import MethodSection, Recipe, needs_stochastic_encoder
from textvae.config.sections import KernelConfig
from textvae.data.batching import TextBatch
from textvae.models.posteriors import Posterior
from textvae.objectives.base import ObjectiveOutput, objective
from textvae.objectives.mmd import mmd_unbiased_mixture


class LatentMatchingConfig(MethodSection):
    """The sections of objectives that match q(z) to p(z) (WAE-MMD, InfoVAE, WAE-GAN): they need a latent."""

    def check(self, recipe: Recipe) -> None:
        if not recipe.model.has_latent:
            raise ValueError(f"objective.type {self.type} needs a latent variable (model.type is {recipe.model.type})")


class StochasticEncoderPenalties(LatentMatchingConfig):
    """Terms that keep a stochastic WAE encoder stochastic (zero for a deterministic encoder)."""

    # Bahuleyan et al. 2019 (stochastic WAE): weight of KL(N(μ, σ²) || N(μ, I)) per document, a KL to a unit
    # Gaussian centred on the posterior's own mean (keeps σ away from 0 without pulling μ to 0)
    kl_weight: float = Field(0.0, ge=0)
    # Rubenstein et al. 2018: weight of the L1 penalty Σ_d |log σ_d²| per document
    logvar_penalty: float = Field(0.0, ge=0)

    def check(self, recipe: Recipe) -> None:
        super().check(recipe)
        if not recipe.model.stochastic_posterior and (self.kl_weight or self.logvar_penalty):
            raise ValueError("objective.kl_weight and logvar_penalty act on a stochastic encoder (model.posterior)")


class WAEMMDConfig(StochasticEncoderPenalties):
    """WAE-MMD (Tolstikhin et al. 2018): reconstruction + λ·MMD(aggregate posterior, prior), unbiased estimate."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)
    type: Literal["wae_mmd"]
    lambda_: float = Field(10.0, ge=0, alias="lambda")
    mmd: KernelConfig = KernelConfig()


class InfoVAEConfig(LatentMatchingConfig):
    """InfoVAE (Zhao et al. 2019): rec + (1-α)·KL(q(z|x)||p(z)) + (α+λ-1)·MMD(q(z), p(z)); α=1 is the MMD-VAE."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)
    type: Literal["infovae"]
    alpha: float = Field(0.0, le=1)
    lambda_: float = Field(1000.0, gt=0, alias="lambda")
    mmd: KernelConfig = KernelConfig(kernel="rbf", scales=[1.0])

    @model_validator(mode="after")
    def _divergence_weight_not_negative(self) -> InfoVAEConfig:
        if self.alpha + self.lambda_ - 1 < 0:
            raise ValueError(f"alpha + lambda - 1 must be >= 0 (got {self.alpha + self.lambda_ - 1:g})")
        return self

    def check(self, recipe: Recipe) -> None:
        super().check(recipe)
        needs_stochastic_encoder(self, recipe)


class LatentMatchingObjective:
    """loss = mean[-log p(x|z) + prior_kl_weight·KL(q(z|x)||p(z)) + penalties] + D(q(z), p(z))

    with one z ~ q(z|x) per document (the mean of a deterministic encoder, for which the KL and the
    penalties are 0). The penalties keep a stochastic encoder stochastic: variance_kl_weight·KL(N(μ,σ²) ||
    N(μ,I)) (Bahuleyan et al. 2019) and logvar_penalty·Σ_d|log σ_d²| (Rubenstein et al. 2018). The divergence
    D between the aggregate posterior and the prior is a batch-level term that subclasses give in `divergence`.
    """

    selection_metric = "rec"  # the validation metric that picks the best epoch (the trainer adds `val_`)

    def __init__(self, prior_kl_weight: float = 0.0, variance_kl_weight: float = 0.0, logvar_penalty: float = 0.0):
        self.prior_kl_weight = prior_kl_weight
        self.variance_kl_weight = variance_kl_weight
        self.logvar_penalty = logvar_penalty

    def divergence(self, model, z: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The weighted batch-level term for posterior samples z [B, Z], and its terms to log."""
        raise NotImplementedError

    def __call__(self, model, batch: TextBatch, step: int) -> ObjectiveOutput:
        return self.loss_from_posterior(model, batch, model.encode(batch.data, batch.lengths), step)

    def loss_from_posterior(self, model, batch: TextBatch, posterior: Posterior, step: int) -> ObjectiveOutput:
        """The batch loss for a given q(z|x) (the encoder's, or one refined by SVI)."""
        z = posterior.rsample(1)  # [B, 1, Z]
        rec, kl, penalties, logged = self._document_terms(model, batch, posterior, z)
        divergence, extra = self.divergence(model, z[:, 0])
        loss = (rec + self.prior_kl_weight * kl + penalties).mean() + divergence
        terms = {"rec": rec.sum().item(), "kl": kl.sum().item(), "kl_weight": self.prior_kl_weight, "n": len(batch)}
        return ObjectiveOutput(loss, {**terms, **logged, **extra})

    def example_losses(self, model, batch: TextBatch, posterior: Posterior, step: int) -> torch.Tensor:
        """Per-document loss with one z ~ q(z|x), [B]: rec + prior_kl_weight·KL + the penalties.

        The divergence between q(z) and p(z) is a batch-level term with no per-document value: left out.
        """
        rec, kl, penalties, _ = self._document_terms(model, batch, posterior, posterior.rsample(1))
        return rec + self.prior_kl_weight * kl + penalties

    def _document_terms(self, model, batch: TextBatch, posterior: Posterior, z: torch.Tensor):
        """-log p(x|z), KL(q(z|x)||p(z)) (reusing z where it is Monte Carlo) and the weighted penalties, each
        [B]; plus the penalties' unweighted batch means to log."""
        rec = -model.log_likelihood(batch.data, z).mean(1)
        if not posterior.stochastic:
            zero = torch.zeros_like(rec)
            return rec, zero, zero, {}
        variance_kl = 0.5 * (posterior.logvar.exp() - posterior.logvar - 1.0).sum(-1)  # KL(N(μ,σ²) || N(μ,I))
        logvar_l1 = posterior.logvar.abs().sum(-1)
        penalties = self.variance_kl_weight * variance_kl + self.logvar_penalty * logvar_l1
        logged = {"variance_kl": variance_kl.mean().item(), "logvar_l1": logvar_l1.mean().item()}
        return rec, model.kl(posterior, z), penalties, logged


class MMDObjective(LatentMatchingObjective):
    """The divergence is weight·MMD²(z_q, z_p), the unbiased estimate between the batch's posterior samples
    and the prior's `grouped_sample` (which carries gradients to a learnable prior: for a mixture of
    Gaussians, samples of every component weighted by the mixture weights, so that the weights learn too).
    A batch of one document has no unbiased estimate: its MMD term is 0."""

    def __init__(self, mmd_weight: float, kernel: KernelConfig, **weights: float) -> None:
        super().__init__(**weights)
        self.mmd_weight = mmd_weight
        self.kernel = kernel

    def divergence(self, model, z: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        if z.shape[0] < 2:
            return z.new_zeros(()), {"mmd": 0.0}
        groups, weights = model.prior.grouped_sample(z.shape[0])
        mmd = mmd_unbiased_mixture(z, groups.to(z), weights.to(z), self.kernel)
        return self.mmd_weight * mmd, {"mmd": mmd.item()}


class WAEMMD(MMDObjective):
    """WAE-MMD (Tolstikhin et al. 2018). The best epoch is the one with the lowest reconstruction NLL: the
    ELBO is not what it optimises and does not exist for a deterministic encoder."""

    selection_metric = "rec"


class InfoVAE(MMDObjective):
    """InfoVAE (Zhao et al. 2019): KL weight 1-α, MMD weight α+λ-1 (α=0, λ=1 is the ELBO)."""

    selection_metric = "elbo_nll"


@objective("wae_mmd", config=WAEMMDConfig)
def make_wae_mmd(cfg: WAEMMDConfig, steps_per_epoch: int, epochs: int) -> WAEMMD:
    return WAEMMD(cfg.lambda_, cfg.mmd, variance_kl_weight=cfg.kl_weight, logvar_penalty=cfg.logvar_penalty)


@objective("infovae", config=InfoVAEConfig)
def make_infovae(cfg: InfoVAEConfig, steps_per_epoch: int, epochs: int) -> InfoVAE:
    return InfoVAE(cfg.alpha + cfg.lambda_ - 1.0, cfg.mmd, prior_kl_weight=1.0 - cfg.alpha)
