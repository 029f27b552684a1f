"""A GRU sentence VAE as a textvae plugin: one file holds the `model:` section, the networks and the builder.

    textvae train examples/plugins/gru.yaml --plugin examples/plugins/gru_architecture.py -o runs/gru

The encoder reads <s> x </s> and maps its state at </s> to q(z|x); the decoder starts from h0 = tanh(W z) and
reads z beside every word (as He et al.'s LSTM decoder does). Everything else (priors, objectives, update
rules, evaluation, sampling, interpolation) comes from the package.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from textvae.config.sections import TextModelSection
from textvae.models.base import TokenDecoder, architecture, document_mask, pool
from textvae.models.posteriors import Posterior, PosteriorHead


class GRUModelConfig(TextModelSection):
    """`model: {type: gru_vae, ...}`: the shared text-model keys plus the GRU's sizes."""

    default_pooling: ClassVar = "last"
    example: ClassVar = {"latent_dim": 2, "embed_dim": 8, "hidden_dim": 8}

    embed_dim: int = Field(256, gt=0)
    hidden_dim: int = Field(512, gt=0)
    dropout: float = Field(0.3, ge=0, lt=1)  # on the decoder's inputs and outputs


class GRUEncoder(nn.Module):
    def __init__(self, vocab_size: int, section: GRUModelConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, section.embed_dim)
        self.gru = nn.GRU(section.embed_dim, section.hidden_dim, batch_first=True)
        self.to_posterior = PosteriorHead(section.hidden_dim, section.latent_dim, section.posterior)
        self.pooling = section.encoder_pooling

    @property
    def embedding_dim(self) -> int:  # the VampPrior feeds pseudo-inputs of this width to `embedded`
        return self.embed.embedding_dim

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> Posterior:
        return self.embedded(self.embed(tokens), lengths)

    def embedded(self, embeddings: torch.Tensor, lengths: torch.Tensor) -> Posterior:
        states, _ = self.gru(embeddings)
        return self.to_posterior(pool(states, document_mask(lengths, states.shape[1]), self.pooling))


class GRUDecoder(TokenDecoder):
    def __init__(self, vocab_size: int, section: GRUModelConfig, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.embed = nn.Embedding(vocab_size, section.embed_dim)
        self.drop = nn.Dropout(section.dropout)
        self.gru = nn.GRU(section.embed_dim + latent_dim, section.hidden_dim, batch_first=True)
        self.start = nn.Linear(latent_dim, section.hidden_dim) if latent_dim else None
        self.output = nn.Linear(section.hidden_dim, vocab_size)

    @property
    def output_layer(self) -> nn.Linear:  # with `features`: the fused output layer + loss under bf16 autocast
        return self.output

    def features(self, inputs: torch.Tensor, z: torch.Tensor | None, state=None):
        """GRU outputs [N, t, H] for inputs [N, t] given z [N, Z]; `state` carries h between calls."""
        x = self.drop(self.embed(inputs))
        if z is not None and self.latent_dim:
            x = torch.cat([x, z.unsqueeze(1).expand(-1, x.shape[1], -1)], dim=-1)
            if state is None:
                state = torch.tanh(self.start(z)).unsqueeze(0)
        out, state = self.gru(x, state)
        return self.drop(out), state

    def logits(self, inputs: torch.Tensor, z: torch.Tensor | None, state=None):
        features, state = self.features(inputs, z, state)
        return self.output(features), state

    @staticmethod
    def reorder_state(state: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Beam search: the hidden state of rows `index` (batch in dim 1)."""
        return state.index_select(1, index)


@architecture("gru_vae", config=GRUModelConfig)
def build_gru_vae(cfg) -> tuple[GRUEncoder, GRUDecoder]:
    """The builder: `cfg` is the model's saved config; `cfg.section` is the validated `model:` section."""
    section = cfg.section
    return GRUEncoder(cfg.vocab_size, section), GRUDecoder(cfg.vocab_size, section, section.latent_dim)
