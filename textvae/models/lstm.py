"""He et al. (2019) LSTM encoder and decoder for sentences and documents (model.type lstm_vae / lstm_lm), with
their `model:` section."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
from pydantic import Field, model_validator
from torch import nn

from textvae.config.sections import TextModelSection
from textvae.models.base import Dropout, TokenDecoder, architecture, check_pooling, document_mask, pool
from textvae.models.posteriors import Posterior, PosteriorHead

if TYPE_CHECKING:  # model.py imports this module to register its architectures
    from textvae.models.model import LatentVariableConfig


class LSTMModelConfig(TextModelSection):
    """He et al. 2019's LSTM VAE: one-layer LSTM encoder and decoder, z fed to the decoder at every step."""

    default_pooling: ClassVar = "last"  # the state at </s>, as He et al.
    example: ClassVar = {"latent_dim": 2, "embed_dim": 8, "hidden_dim": 8, "dropout_in": 0.0, "dropout_out": 0.0}

    embed_dim: int = Field(512, gt=0)
    hidden_dim: int = Field(1024, gt=0)
    enc_embed_dim: int | None = Field(None, gt=0)  # defaults to embed_dim
    enc_hidden_dim: int | None = Field(None, gt=0)  # defaults to hidden_dim
    dropout_in: float = Field(0.5, ge=0, lt=1)
    dropout_out: float = Field(0.5, ge=0, lt=1)
    init_scale: float = Field(0.01, gt=0)
    embed_init_scale: float = Field(0.1, gt=0)

    @model_validator(mode="after")
    def _no_first_pooling(self) -> LSTMModelConfig:
        if self.pooling == "first":
            raise ValueError("model.pooling first: an LSTM's state after <s> has read nothing; use last or mean")
        return self


class LSTMLanguageModelConfig(LSTMModelConfig):
    """The LSTM decoder alone (no latent): the language-model baseline."""

    has_latent: ClassVar = False


def _cpu_has_bf16_lstm() -> bool:
    """Whether oneDNN has a bf16 LSTM on this CPU (AVX-512 BF16 / AMX); on others (e.g. AVX2-only) it fails."""
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(probe()) if probe is not None else True


CPU_BF16_LSTM = _cpu_has_bf16_lstm()


def run_lstm(lstm: nn.LSTM, inputs: torch.Tensor, state=None):
    """`lstm(inputs, state)`; under CPU bf16 autocast on a CPU without bf16 LSTM kernels, in fp32 instead (the
    rest of the pass stays under autocast) rather than failing in oneDNN."""
    if inputs.device.type == "cpu" and not CPU_BF16_LSTM and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            state = None if state is None else tuple(s.float() for s in state)
            return lstm(inputs.float(), state)
    return lstm(inputs, state)


def uniform_init(module: nn.Module, scale: float, embed_scale: float) -> None:
    """He et al.'s init: every parameter U(-scale, scale), embeddings U(-embed_scale, embed_scale)."""
    for param in module.parameters():
        nn.init.uniform_(param, -scale, scale)
    for sub in module.modules():
        if isinstance(sub, nn.Embedding):
            nn.init.uniform_(sub.weight, -embed_scale, embed_scale)


class LSTMEncoder(nn.Module):
    """Reads <s> x </s>; q(z|x) (Gaussian mean and log-variance, or a point) from the hidden state at </s>
    (`pooling="last"`, He et al.) or the mean of the hidden states (`"mean"`: every word reaches z directly,
    for long documents whose endings are alike)."""

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int,
        hidden_dim: int,
        latent_dim: int,
        posterior: str = "gaussian",
        pooling: str = "last",
    ) -> None:
        super().__init__()
        if check_pooling(pooling) == "first":
            raise ValueError("an LSTM encoder pools the last state or the mean, not the first")
        self.pooling = pooling
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=None)
        self.lstm = nn.LSTM(embed_dim, hidden_dim, batch_first=True)
        self.to_posterior = PosteriorHead(hidden_dim, latent_dim, posterior)

    @property
    def embedding_dim(self) -> int:
        return self.embed.embedding_dim

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> Posterior:
        return self.embedded(self.embed(tokens), lengths)

    def embedded(self, embeddings: torch.Tensor, lengths: torch.Tensor) -> Posterior:
        """q(z|x) from input embeddings [B, T, E] (T = length + 2 for the longest)."""
        out, _ = run_lstm(self.lstm, embeddings)
        # </s> is at length + 1; padding after it cannot reach it or the states before it (causal LSTM)
        return self.to_posterior(pool(out, document_mask(lengths, out.shape[1]), self.pooling))


class LSTMDecoder(TokenDecoder):
    """p(x|z): z is concatenated to every input embedding and sets c0 = W z, h0 = tanh(c0).

    With `latent_dim == 0` this is the plain LSTM language model.
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int,
        hidden_dim: int,
        latent_dim: int,
        dropout_in: float = 0.5,
        dropout_out: float = 0.5,
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.dropout_in = Dropout(dropout_in)
        self.dropout_out = Dropout(dropout_out)
        self.lstm = nn.LSTM(embed_dim + latent_dim, hidden_dim, batch_first=True)
        self.init_state = nn.Linear(latent_dim, hidden_dim, bias=False) if latent_dim else None
        self.output = nn.Linear(hidden_dim, vocab_size)

    def initial_state(self, z: torch.Tensor | None, batch: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        if z is None or self.init_state is None:
            return None
        c0 = self.init_state(z).unsqueeze(0)
        return torch.tanh(c0), c0

    def hidden(self, inputs: torch.Tensor, z: torch.Tensor | None, state=None):
        """The LSTM's outputs [N, T, H] for inputs [N, T] with one z [N, Z] per row; returns (outputs, state)."""
        emb = self.dropout_in(self.embed(inputs))
        if z is not None and self.latent_dim:
            emb = torch.cat([emb, z.unsqueeze(1).expand(-1, emb.shape[1], -1)], dim=-1)
        if state is None:
            state = self.initial_state(z, inputs.shape[0])
        return run_lstm(self.lstm, emb, state)

    @property
    def output_layer(self) -> nn.Linear:
        return self.output

    def pass_floats(self, tokens: torch.Tensor) -> int:
        """Floats a scoring pass holds per document and z: the fused loss never holds the logits, only the
        LSTM's inputs, gates and outputs (sizes the batches of importance-weighted evaluation)."""
        if not self.fused_loss:
            return tokens.shape[1] * self.output.out_features
        return tokens.shape[1] * (self.lstm.input_size + 6 * self.lstm.hidden_size)

    def features(self, inputs: torch.Tensor, z: torch.Tensor | None, state=None):
        """The output layer's input [N, T, H] (LSTM outputs after dropout); returns (features, state)."""
        out, state = self.hidden(inputs, z, state)
        return self.dropout_out(out), state

    def logits(self, inputs: torch.Tensor, z: torch.Tensor | None, state=None):
        """Next-token logits [N, T, V] for inputs [N, T] with one z [N, Z] per row; returns (logits, state)."""
        features, state = self.features(inputs, z, state)
        return self.output(features), state

    @staticmethod
    def reorder_state(
        state: tuple[torch.Tensor, torch.Tensor], index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The (h, c) of rows `index`, batch in dim 1 (beam search: which hypothesis each new row continues)."""
        h, c = state
        return h.index_select(1, index), c.index_select(1, index)


@architecture("lstm_vae", config=LSTMModelConfig)
def build_lstm_vae(cfg: LatentVariableConfig) -> tuple[LSTMEncoder, LSTMDecoder]:
    """LSTM encoder and decoder with He et al.'s uniform initialisation."""
    section = cfg.section
    encoder = LSTMEncoder(
        cfg.vocab_size,
        section.enc_embed_dim or section.embed_dim,
        section.enc_hidden_dim or section.hidden_dim,
        section.latent_dim,
        section.posterior,
        section.encoder_pooling,
    )
    decoder = _decoder(section, cfg.vocab_size, section.latent_dim)
    uniform_init(nn.ModuleList([encoder, decoder]), section.init_scale, section.embed_init_scale)
    return encoder, decoder


@architecture("lstm_lm", config=LSTMLanguageModelConfig)
def build_lstm_lm(cfg: LatentVariableConfig) -> tuple[None, LSTMDecoder]:
    """The LSTM decoder alone, as a language model (no latent)."""
    section = cfg.section
    decoder = _decoder(section, cfg.vocab_size, 0)
    uniform_init(decoder, section.init_scale, section.embed_init_scale)
    return None, decoder


def _decoder(section: LSTMModelConfig, vocab_size: int, latent_dim: int) -> LSTMDecoder:
    return LSTMDecoder(
        vocab_size, section.embed_dim, section.hidden_dim, latent_dim, section.dropout_in, section.dropout_out
    )
