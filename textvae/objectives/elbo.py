"""The ELBO with a scheduled, β-scaled KL weight and optional free bits."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from textvae.config.recipe import MethodSection, Recipe, needs_stochastic_encoder
from textvae.config.sections import ScheduleConfig
from textvae.data.batching import TextBatch
from textvae.data.tokenizers import BOS, EOS, PAD
from textvae.models.posteriors import DiagonalGaussian
from textvae.objectives.base import ObjectiveOutput, objective
from textvae.objectives.schedules import Schedule, make_schedule


def bag_of_words_nll(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """-sum over a document's words of log softmax(logits)[word]: logits [B, V] from z, tokens [B, T] -> [B].

    Every occurrence counts; <s>, </s> and padding are not words. Zhao et al. 2017's bag-of-words loss.
    """
    log_probs = logits.log_softmax(-1).gather(1, tokens)
    words = (tokens != PAD) & (tokens != BOS) & (tokens != EOS)
    return -(log_probs * words).sum(1)


class ElboConfig(MethodSection):
    """The ELBO with a scheduled, β-scaled KL weight and optional free bits."""

    type: Literal["elbo"] = "elbo"
    beta: float = Field(1.0, ge=0)  # multiplies the scheduled KL weight
    kl_schedule: ScheduleConfig = ScheduleConfig()
    free_bits: float | None = Field(None, ge=0)  # per-dimension KL target (nats), Kingma et al. 2016
    # batch: each dimension's batch-averaged KL is clamped at free_bits (Kingma et al.); document: each
    # document's KL in each dimension counts only above free_bits (Li et al. 2019's `--fb 2`)
    free_bits_scope: Literal["batch", "document"] = "batch"
    # Zhao et al. 2017's bag-of-words loss: the decoder's `model.bow_head` predicts the document's words
    # from z alone, weighted by this (an auxiliary training term; p(x|z) and evaluation do not use it)
    bow_weight: float = Field(0.0, ge=0)

    def check(self, recipe: Recipe) -> None:
        model = recipe.model
        if self.bow_weight > 0 and not getattr(model, "bow_head", False):
            raise ValueError("objective.bow_weight needs the bag-of-words head: set model.bow_head: true")
        if not model.has_latent and self.free_bits is not None:
            raise ValueError(f"objective.free_bits has no meaning for a language model (model.type: {model.type})")
        if self.free_bits is not None and not model.prior.per_dimension_kl:
            raise ValueError("objective.free_bits needs the per-dimension KL of model.prior.type standard_normal")
        needs_stochastic_encoder(self, recipe)


class ELBO:
    """loss = E_q[-log p(x|z)] + β · w(step) · KL, averaged over documents.

    The KL is to the model's prior: exact for N(0, I), Monte Carlo on the reconstruction's z otherwise.

    Free bits (Kingma et al. 2016, scope "batch"): the KL of each latent dimension, averaged over the
    batch, is clamped from below at `free_bits` nats before it is weighted, so no gradient pushes a
    dimension's KL under the target. Scope "document" (Li et al. 2019's `--fb 2`): each document's KL
    in each dimension enters the loss only where it exceeds `free_bits`.

    An autoencoder (β = 0) picks its best epoch by validation reconstruction, as Li et al.'s pretraining.
    """

    selection_metric = "elbo_nll"  # the validation metric that picks the best epoch

    def __init__(
        self,
        beta: float,
        schedule: Schedule,
        free_bits: float | None = None,
        bow_weight: float = 0.0,
        free_bits_scope: str = "batch",
    ) -> None:
        self.beta = beta
        self.schedule = schedule
        self.free_bits = free_bits
        self.free_bits_scope = free_bits_scope
        self.bow_weight = bow_weight
        if beta == 0:
            self.selection_metric = "rec"

    def kl_weight(self, step: int) -> float:
        return self.beta * self.schedule(step)

    def __call__(self, model, batch: TextBatch, step: int) -> ObjectiveOutput:
        if not model.has_latent:
            rec = -model.log_likelihood(batch.data, None).mean(1)  # [B]
            return ObjectiveOutput(rec.mean(), {"rec": rec.sum().item(), "kl": 0.0, "kl_weight": 0.0, "n": len(batch)})
        return self.loss_from_posterior(model, batch, model.encode(batch.data, batch.lengths), step)

    def loss_from_posterior(self, model, batch: TextBatch, posterior: DiagonalGaussian, step: int) -> ObjectiveOutput:
        """The batch loss for a given q(z|x) (the encoder's, or one refined by SVI)."""
        z = posterior.rsample(1)
        rec = -model.log_likelihood(batch.data, z).mean(1)  # [B]
        if self.free_bits is not None:  # needs the per-dimension KL to N(0, I) (the recipe checks the prior)
            kl_dims = posterior.kl()  # [B, Z]
            kl, kl_term = kl_dims.sum(-1), self.thresholded_kl(kl_dims)
        else:
            kl = model.kl(posterior, z)  # [B]: closed form, or Monte Carlo on the same z
            kl_term = kl.mean()
        weight = self.kl_weight(step)
        loss = rec.mean() + weight * kl_term
        terms = {"rec": rec.sum().item(), "kl": kl.sum().item(), "kl_weight": weight, "n": len(batch)}
        if self.bow_weight > 0:
            bow = bag_of_words_nll(model.decoder.bow(z[:, 0]), batch.data)
            loss = loss + self.bow_weight * bow.mean()
            terms["bow"] = bow.mean().item()  # per document (logged as a mean over steps)
        return ObjectiveOutput(loss, terms)

    def thresholded_kl(self, kl_dims: torch.Tensor) -> torch.Tensor:
        """The free-bits KL term of a batch from the per-document, per-dimension KL [B, Z]."""
        if self.free_bits_scope == "document":
            return (kl_dims * (kl_dims > self.free_bits)).sum(-1).mean()
        return kl_dims.mean(0).clamp(min=self.free_bits).sum()

    def example_losses(self, model, batch: TextBatch, posterior: DiagonalGaussian, step: int) -> torch.Tensor:
        """Per-document loss -log p(x|z) + w·KL with one z ~ q, [B]: what SVI minimises for each document.

        Free bits are a batch-level clamp and have no per-document meaning, so they are left out here.
        """
        z = posterior.rsample(1)
        rec = -model.log_likelihood(batch.data, z).mean(1)
        return rec + self.kl_weight(step) * model.kl(posterior, z)


@objective("elbo", config=ElboConfig)
def make_elbo(cfg: ElboConfig, steps_per_epoch: int, epochs: int) -> ELBO:
    schedule = make_schedule(cfg.kl_schedule, steps_per_epoch, epochs)
    return ELBO(cfg.beta, schedule, cfg.free_bits, cfg.bow_weight, cfg.free_bits_scope)
