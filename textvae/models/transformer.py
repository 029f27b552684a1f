"""From-scratch transformer encoder and causal transformer decoder (model.type transformer_vae / transformer_lm).

Both are pre-LayerNorm stacks with learned positions. The decoder receives z as in Optimus (Li et al. 2020):
a linear map of z added to every token embedding ("embedding"), one extra key/value slot per layer computed
from z ("memory"), or both. Attention is written out, softmax(QKᵀ/√d + mask) V, rather than through fused
kernels, so that SA-VAE's exact mode can differentiate twice through the decoder on any device.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from textvae.config.sections import Section, TextModelSection
from textvae.errors import TextVAEError
from textvae.models.base import TokenDecoder, architecture, check_pooling, document_mask, pool
from textvae.models.posteriors import Posterior, PosteriorHead

if TYPE_CHECKING:  # model.py imports this module to register its architectures
    from textvae.models.model import LatentVariableConfig

INJECTIONS = ("embedding", "memory", "both")


class TransformerConfig(Section):
    """The from-scratch encoder and decoder stacks (`model.transformer`)."""

    d_model: int = Field(256, gt=0)
    n_heads: int = Field(4, gt=0)
    ff_dim: int = Field(1024, gt=0)
    encoder_layers: int = Field(2, ge=1)
    decoder_layers: int = Field(4, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    max_length: int = Field(512, gt=1)  # learned positions: longest <s> x </s> sequence
    tie_embeddings: bool = True  # the decoder's output layer shares the token embedding matrix

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TransformerConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        return self


class TransformerModelConfig(TextModelSection):
    """A transformer VAE (model.type transformer_vae): pre-LN encoder, causal decoder that z reaches as Optimus."""

    example: ClassVar = {
        "latent_dim": 2,
        "transformer": {"d_model": 8, "n_heads": 2, "ff_dim": 16, "encoder_layers": 1, "decoder_layers": 1},
    }

    transformer: TransformerConfig = TransformerConfig()
    # how z reaches the decoder: added to every token embedding, as one extra key/value memory slot in every
    # layer (Optimus), or both
    latent_injection: Literal["embedding", "memory", "both"] = "both"


class TransformerLanguageModelConfig(TransformerModelConfig):
    """The transformer decoder alone (model.type transformer_lm, no latent)."""

    has_latent: ClassVar = False


KeyValue = tuple[torch.Tensor, torch.Tensor]  # keys and values, each [N, heads, positions, head_dim]
DecoderState = tuple[KeyValue, ...]  # one KeyValue per decoder layer: the cache of everything fed so far


def gpt2_init(module: nn.Module) -> None:
    """GPT-2 style: linear and embedding weights N(0, 0.02), biases 0, LayerNorm weights 1."""
    for sub in module.modules():
        if isinstance(sub, (nn.Linear, nn.Embedding)):
            nn.init.normal_(sub.weight, 0.0, 0.02)
        elif isinstance(sub, nn.LayerNorm):
            nn.init.ones_(sub.weight)
        if isinstance(getattr(sub, "bias", None), nn.Parameter):
            nn.init.zeros_(sub.bias)


class Attention(nn.Module):
    """Multi-head attention over a cache of earlier positions and an optional memory slot visible to all."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """[N, t, D] -> [N, heads, t, D / heads]."""
        return x.unflatten(-1, (self.n_heads, -1)).transpose(1, 2)

    def forward(
        self, x: torch.Tensor, allowed: torch.Tensor, past: KeyValue | None = None, memory: KeyValue | None = None
    ) -> tuple[torch.Tensor, KeyValue]:
        """x [N, t, D]; allowed: bool, broadcastable to [N, heads, t, past + t]. Returns (output, keys and values)."""
        q, k, v = (self._split(part) for part in self.qkv(x).chunk(3, dim=-1))
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        present = (k, v)
        if memory is not None:  # one more key and value, [N, 1, D] each, that every query may attend to
            k, v = torch.cat([self._split(memory[0]), k], dim=2), torch.cat([self._split(memory[1]), v], dim=2)
            allowed = torch.cat([allowed.new_ones(*allowed.shape[:-1], 1), allowed], dim=-1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        weights = self.dropout(scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1))
        return self.proj((weights @ v).transpose(1, 2).flatten(2)), present


class Block(nn.Module):
    """A pre-LN layer: x + attention(LN(x)), then x + MLP(LN(x)); with `memory_dim`, z gives one key/value slot."""

    def __init__(self, cfg: TransformerConfig, memory_dim: int = 0) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(cfg.d_model)
        self.attn = Attention(cfg.d_model, cfg.n_heads, cfg.dropout)
        self.mlp_norm = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, cfg.ff_dim), nn.GELU(), nn.Linear(cfg.ff_dim, cfg.d_model))
        self.dropout = nn.Dropout(cfg.dropout)
        self.memory = nn.Linear(memory_dim, 2 * cfg.d_model) if memory_dim else None

    def forward(
        self, x: torch.Tensor, allowed: torch.Tensor, past: KeyValue | None = None, z: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, KeyValue]:
        memory = None
        if self.memory is not None and z is not None:
            memory = tuple(self.memory(z).unsqueeze(1).chunk(2, dim=-1))
        out, present = self.attn(self.attn_norm(x), allowed, past, memory)
        x = x + self.dropout(out)
        return x + self.dropout(self.mlp(self.mlp_norm(x))), present


class TransformerStack(nn.Module):
    """What encoder and decoder share: token and learned position embeddings, pre-LN blocks, a final LayerNorm."""

    def __init__(self, vocab_size: int, cfg: TransformerConfig, layers: int, memory_dim: int = 0) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, cfg.d_model)
        self.positions = nn.Embedding(cfg.max_length, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, memory_dim) for _ in range(layers))
        self.norm = nn.LayerNorm(cfg.d_model)

    @property
    def embedding_dim(self) -> int:
        return self.embed.embedding_dim

    def position_embeddings(self, start: int, stop: int, device: torch.device) -> torch.Tensor:
        """Embeddings [stop - start, D] of positions start..stop-1; TextVAEError past max_length."""
        if stop > self.positions.num_embeddings:
            raise TextVAEError(
                f"sequence of {stop} positions is longer than model.transformer.max_length "
                f"({self.positions.num_embeddings}); shorten the documents or raise max_length"
            )
        return self.positions(torch.arange(start, stop, device=device))

    def run(
        self,
        x: torch.Tensor,
        allowed: torch.Tensor,
        state: DecoderState | None = None,
        z: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, DecoderState]:
        """The blocks and the final LayerNorm over input vectors x [N, t, D]; returns (outputs, keys and values)."""
        x = self.dropout(x)
        presents = []
        for i, block in enumerate(self.blocks):
            x, present = block(x, allowed, None if state is None else state[i], z)
            presents.append(present)
        return self.norm(x), tuple(presents)


class TransformerEncoder(TransformerStack):
    """Reads <s> x </s> bidirectionally (padding masked out); the first position or the mean gives q(z|x)."""

    def __init__(
        self,
        vocab_size: int,
        latent_dim: int,
        cfg: TransformerConfig,
        pooling: str = "mean",
        posterior: str = "gaussian",
    ) -> None:
        super().__init__(vocab_size, cfg, cfg.encoder_layers)
        self.pooling = check_pooling(pooling)
        self.to_posterior = PosteriorHead(cfg.d_model, latent_dim, posterior)
        gpt2_init(self)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> Posterior:
        return self.embedded(self.embed(tokens), lengths)

    def embedded(self, embeddings: torch.Tensor, lengths: torch.Tensor) -> Posterior:
        """q(z|x) from input embeddings [B, T, E]; document i fills positions 0..lengths[i] + 1."""
        positions = embeddings.shape[1]
        x = embeddings + self.position_embeddings(0, positions, embeddings.device)
        keep = document_mask(lengths.to(x.device), positions)  # [B, T]
        out, _ = self.run(x, keep[:, None, None, :])
        return self.to_posterior(pool(out, keep, self.pooling))


class TransformerDecoder(TransformerStack, TokenDecoder):
    """Causal p(x|z) with z injected per `injection` (see the module docstring); `latent_dim == 0`: a plain LM.

    `logits` keeps a key/value cache in `state` (one (keys, values) pair per layer, batch first), so feeding
    a sequence token by token gives the logits of feeding it at once. Beam search reorders it with
    `reorder_state`.
    """

    def __init__(self, vocab_size: int, latent_dim: int, cfg: TransformerConfig, injection: str = "both") -> None:
        if injection not in INJECTIONS:
            raise ValueError(f"unknown latent injection {injection!r}; expected one of {', '.join(INJECTIONS)}")
        memory = latent_dim > 0 and injection in ("memory", "both")
        super().__init__(vocab_size, cfg, cfg.decoder_layers, latent_dim if memory else 0)
        self.latent_dim = latent_dim
        add = latent_dim > 0 and injection in ("embedding", "both")
        self.latent_embedding = nn.Linear(latent_dim, cfg.d_model) if add else None
        self.output = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, vocab_size, bias=False)
        self.output_bias = nn.Parameter(torch.zeros(vocab_size))
        gpt2_init(self)

    @property
    def max_positions(self) -> int:
        """The longest input the decoder can read (<s> and the words)."""
        return self.positions.num_embeddings

    def logits(
        self, inputs: torch.Tensor, z: torch.Tensor | None, state: DecoderState | None = None
    ) -> tuple[torch.Tensor, DecoderState]:
        """Next-token logits [N, t, V] for inputs [N, t] after those cached in `state`; returns (logits, state)."""
        if not self.latent_dim:
            z = None  # a language model ignores any latent
        elif z is None:
            raise ValueError(f"this decoder needs a latent z of size {self.latent_dim}")
        start = 0 if state is None else state[0][0].shape[2]
        stop = start + inputs.shape[1]
        x = self.embed(inputs) + self.position_embeddings(start, stop, inputs.device)
        if self.latent_embedding is not None:
            x = x + self.latent_embedding(z).unsqueeze(1)
        queries = torch.arange(start, stop, device=inputs.device).unsqueeze(1)
        allowed = torch.arange(stop, device=inputs.device) <= queries  # [t, stop]: causal
        out, state = self.run(x, allowed, state, z)
        weight = self.embed.weight if self.output is None else self.output.weight
        return F.linear(out, weight, self.output_bias), state

    @staticmethod
    def reorder_state(state: DecoderState, index: torch.Tensor) -> DecoderState:
        """The cache of rows `index` (beam search: which hypothesis each new row continues)."""
        return tuple((k.index_select(0, index), v.index_select(0, index)) for k, v in state)


def _decoder(cfg: LatentVariableConfig, latent_dim: int) -> TransformerDecoder:
    section = cfg.section
    return TransformerDecoder(cfg.vocab_size, latent_dim, section.transformer, section.latent_injection)


@architecture("transformer_vae", config=TransformerModelConfig)
def build_transformer_vae(cfg: LatentVariableConfig) -> tuple[TransformerEncoder, TransformerDecoder]:
    """Transformer encoder and decoder from a `LatentVariableConfig`."""
    section = cfg.section
    encoder = TransformerEncoder(
        cfg.vocab_size, cfg.latent_dim, section.transformer, section.encoder_pooling, section.posterior
    )
    return encoder, _decoder(cfg, cfg.latent_dim)


@architecture("transformer_lm", config=TransformerLanguageModelConfig)
def build_transformer_lm(cfg: LatentVariableConfig) -> tuple[None, TransformerDecoder]:
    """The transformer decoder alone, as a language model (no latent)."""
    return None, _decoder(cfg, 0)
