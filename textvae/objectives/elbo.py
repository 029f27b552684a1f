"""The ELBO with a scheduled, β-scaled KL weight and optional free bits."""

from __future__ import annotations

from textvae.config import ObjectiveConfig
from textvae.data.batching import TextBatch
from textvae.objectives.base import ObjectiveOutput, objective
from textvae.objectives.schedules import Schedule, make_schedule


class ELBO:
    """loss = E_q[-log p(x|z)] + β · w(step) · KL, averaged over documents.

    Free bits (Kingma et al. 2016): the KL of each latent dimension, averaged over the batch, is
    clamped from below at `free_bits` nats before it is weighted, so no gradient pushes a
    dimension's KL under the target.
    """

    def __init__(self, beta: float, schedule: Schedule, free_bits: float | None = None) -> None:
        self.beta = beta
        self.schedule = schedule
        self.free_bits = free_bits

    def kl_weight(self, step: int) -> float:
        return self.beta * self.schedule(step)

    def __call__(self, model, batch: TextBatch, step: int) -> ObjectiveOutput:
        out = model(batch.tokens, batch.lengths)
        rec = -out.log_likelihood.mean(1)  # [B]
        size = len(batch)
        if out.kl is None:  # language model
            return ObjectiveOutput(rec.mean(), {"rec": rec.sum().item(), "kl": 0.0, "kl_weight": 0.0, "n": size})
        kl_dims = out.kl.mean(0)  # [Z]
        kl_term = kl_dims.clamp(min=self.free_bits).sum() if self.free_bits is not None else kl_dims.sum()
        weight = self.kl_weight(step)
        loss = rec.mean() + weight * kl_term
        kl_sum = out.kl.sum().item()
        return ObjectiveOutput(loss, {"rec": rec.sum().item(), "kl": kl_sum, "kl_weight": weight, "n": size})


@objective("elbo")
def make_elbo(cfg: ObjectiveConfig, steps_per_epoch: int, epochs: int) -> ELBO:
    return ELBO(cfg.beta, make_schedule(cfg.kl_schedule, steps_per_epoch, epochs), cfg.free_bits)

