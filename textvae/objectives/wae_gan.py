"""WAE-GAN (Tolstikhin et al. 2018): the divergence between q(z) and p(z) is judged by a latent discriminator."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field
from torch import nn
from torch.func import functional_call

from textvae.config.sections import Section
from textvae.objectives.base import objective
from textvae.objectives.wae import LatentMatchingObjective, StochasticEncoderPenalties
from textvae.training.guards import NonFiniteGuard
from textvae.training.stepping import guarded_step


class DiscriminatorConfig(Section):
    """WAE-GAN's latent-space discriminator: an MLP with its own Adam optimiser (Tolstikhin et al.)."""

    hidden_dim: int = Field(512, gt=0)
    layers: int = Field(3, ge=1)  # hidden layers
    lr: float = Field(5e-4, gt=0)
    betas: tuple[float, float] = (0.5, 0.999)


class WAEGANConfig(StochasticEncoderPenalties):
    """WAE-GAN (Tolstikhin et al. 2018): reconstruction + λ·(-log D(z)), z from the encoder, D trained adversarially."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)
    type: Literal["wae_gan"]
    lambda_: float = Field(1.0, ge=0, alias="lambda")
    discriminator: DiscriminatorConfig = DiscriminatorConfig()


def make_discriminator(latent_dim: int, cfg: DiscriminatorConfig) -> nn.Sequential:
    """An MLP z [N, Z] -> one logit per row [N, 1]: `cfg.layers` hidden layers of `cfg.hidden_dim` with ReLU."""
    layers: list[nn.Module] = []
    width = latent_dim
    for _ in range(cfg.layers):
        layers += [nn.Linear(width, cfg.hidden_dim), nn.ReLU()]
        width = cfg.hidden_dim
    return nn.Sequential(*layers, nn.Linear(width, 1))


class WAEGAN(LatentMatchingObjective):
    """WAE-GAN: rec + λ·mean(-log σ(D(z_q))) (the non-saturating generator loss) + the stochastic-encoder
    penalties, where D tells prior samples (label 1) from encoder samples (label 0).

    When the model is training and gradients are enabled, each call first takes one Adam step of D on the
    batch's detached z_q against as many prior samples (binary cross-entropy). D is built on the first call
    (`discriminator`, `optimizer`); it never sends gradients into the model, and the model's loss never
    reaches D's parameters. A learnable prior gets no gradient from this objective: its samples only train D.
    A non-finite discriminator loss or gradient skips D's step only; `guard` counts it (the update rule sets its
    own guard here, so one guard counts every skipped step).
    """

    selection_metric = "rec"

    def __init__(
        self, weight: float, cfg: DiscriminatorConfig, variance_kl_weight: float = 0.0, logvar_penalty: float = 0.0
    ) -> None:
        super().__init__(variance_kl_weight=variance_kl_weight, logvar_penalty=logvar_penalty)
        self.weight = weight
        self.cfg = cfg
        self.discriminator: nn.Sequential | None = None
        self.optimizer: torch.optim.Adam | None = None
        self.guard = NonFiniteGuard()

    def build(self, latent_dim: int, device: torch.device | str) -> nn.Sequential:
        """The discriminator (float32, whatever the model's precision) and its optimiser, created once; call it
        before loading a checkpoint of them."""
        if self.discriminator is None:
            self.discriminator = make_discriminator(latent_dim, self.cfg).to(device)
            self.optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=self.cfg.lr, betas=self.cfg.betas)
        return self.discriminator

    def state_dict(self) -> dict:
        """The discriminator and its optimiser (empty before the first training step builds them)."""
        if self.discriminator is None:
            return {}
        return {"discriminator": self.discriminator.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict, latent_dim: int, device: torch.device | str) -> None:
        if state:
            self.build(latent_dim, device).load_state_dict(state["discriminator"])
            self.optimizer.load_state_dict(state["optimizer"])

    def discriminator_step(self, posterior_z: torch.Tensor, prior_z: torch.Tensor) -> float:
        """One step of D on posterior samples (label 0) vs prior samples (label 1), unless the guard skips it;
        returns its loss."""
        discriminator = self.build(posterior_z.shape[-1], posterior_z.device)
        logits = discriminator(torch.cat([posterior_z.detach(), prior_z.detach()]).float()).squeeze(-1)
        labels = torch.cat([torch.zeros_like(logits[: len(posterior_z)]), torch.ones_like(logits[len(posterior_z) :])])
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # the model's path: gradients averaged (data-parallel processes keep one discriminator), guarded step
        guarded_step(list(discriminator.parameters()), [self.optimizer], loss, self.guard, part="discriminator")
        self.optimizer.zero_grad(set_to_none=True)
        return loss.item()

    def divergence(self, model, z: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        terms: dict[str, float] = {}
        if model.training and torch.is_grad_enabled():
            terms["disc_loss"] = self.discriminator_step(z, model.prior.sample(z.shape[0], z.device))
        discriminator = self.build(z.shape[-1], z.device)
        frozen = {name: p.detach() for name, p in discriminator.named_parameters()}
        logits = functional_call(discriminator, frozen, (z.float(),)).squeeze(-1)
        adversarial = F.softplus(-logits).mean()  # -log σ(D(z_q))
        return self.weight * adversarial, {**terms, "adv": adversarial.item()}


@objective("wae_gan", config=WAEGANConfig)
def make_wae_gan(cfg: WAEGANConfig, steps_per_epoch: int, epochs: int) -> WAEGAN:
    return WAEGAN(cfg.lambda_, cfg.discriminator, cfg.kl_weight, cfg.logvar_penalty)
