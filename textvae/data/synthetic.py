"""He et al. (2019)-style synthetic text: a random LSTM language model conditioned on a 2-d latent.

The generative process follows the paper's section 5.1 and the generator released with it
(jxhe/vae-lagging-encoder, `synthetic-data/`), re-implemented here with a local
`torch.Generator` so that the data is a pure function of the seed:

1. z ~ mixture of four Gaussians with means (-2,-2), (2,2), (-2,2), (2,-2), unit variance and
   equal weights (a multi-modal 2-d prior);
2. a 1-layer LSTM with random weights (embedding 100, hidden 100, all weights ~ U(-1, 1)) reads
   the sequence; z is concatenated to every input embedding and sets the initial state
   (c0 = W z, h0 = tanh(c0));
3. next-token logits = V h_t + U z with U ~ U(-3, 3), so z also shifts every step's distribution;
4. the first token is uniform over the vocabulary, the next `length - 1` are sampled from
   softmax(logits / temperature). At temperature 1 (He et al.'s choice) the data is far from both
   constant and uniform: about 5 nats per position after the first (uniform would be 6.9), close
   to the statistics of He et al.'s released files.

Lines are written like He et al.'s files: decimal ids, each followed by one space.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

LATENT_DIM = 2
EMBED_DIM = 100
HIDDEN_DIM = 100
WEIGHT_SCALE = 1.0
LATENT_LOGIT_SCALE = 3.0
COMPONENT_MEANS = ((-2.0, -2.0), (2.0, 2.0), (-2.0, 2.0), (2.0, -2.0))
DEFAULT_SEED = 19950927  # the default seed of He et al.'s generator (their bytes are not reproduced)
CHUNK = 4096


@dataclass(frozen=True)
class SyntheticSample:
    """Sampled sequences with the latent codes and mixture components that produced them."""

    tokens: torch.Tensor  # [n, length] int64
    z: torch.Tensor  # [n, 2]
    component: torch.Tensor  # [n] int64


class RandomLatentLSTM:
    """A randomly initialised latent-conditioned LSTM language model (no training, no autograd)."""

    def __init__(self, vocab_size: int, generator: torch.Generator) -> None:
        def uniform(*shape: int, scale: float = WEIGHT_SCALE) -> torch.Tensor:
            return torch.empty(*shape).uniform_(-scale, scale, generator=generator)

        self.vocab_size = vocab_size
        self.embed = uniform(vocab_size, EMBED_DIM)
        self.w_ih = uniform(4 * HIDDEN_DIM, EMBED_DIM + LATENT_DIM)
        self.w_hh = uniform(4 * HIDDEN_DIM, HIDDEN_DIM)
        self.bias = uniform(4 * HIDDEN_DIM) + uniform(4 * HIDDEN_DIM)  # b_ih + b_hh
        self.w_z_state = uniform(HIDDEN_DIM, LATENT_DIM)
        self.w_out = uniform(vocab_size, HIDDEN_DIM)
        self.w_z_out = uniform(vocab_size, LATENT_DIM, scale=LATENT_LOGIT_SCALE)

    def _step(
        self, token: torch.Tensor, z: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One LSTM step; returns next-token logits and the new state."""
        x = torch.cat([self.embed[token], z], dim=-1)
        gates = x @ self.w_ih.T + h @ self.w_hh.T + self.bias
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h @ self.w_out.T + z @ self.w_z_out.T, h, c

    def sample(self, z: torch.Tensor, length: int, temperature: float, generator: torch.Generator) -> torch.Tensor:
        """Sample one sequence of `length` tokens per row of z."""
        n = z.shape[0]
        token = torch.randint(self.vocab_size, (n,), generator=generator)
        c = z @ self.w_z_state.T
        h = torch.tanh(c)
        out = [token]
        for _ in range(length - 1):
            logits, h, c = self._step(token, z, h, c)
            token = sample_categorical(logits / temperature, generator)
            out.append(token)
        return torch.stack(out, dim=1)


def sample_categorical(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One draw per row from softmax(logits), by inverting the CDF (much faster than multinomial)."""
    cdf = torch.softmax(logits, dim=-1).cumsum(dim=-1)
    u = torch.rand(logits.shape[0], 1, generator=generator) * cdf[:, -1:]
    return torch.searchsorted(cdf, u).squeeze(1).clamp_max(logits.shape[-1] - 1)


def sample_prior(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw n latents from the four-component Gaussian mixture; returns (z, component)."""
    means = torch.tensor(COMPONENT_MEANS)
    component = torch.randint(len(COMPONENT_MEANS), (n,), generator=generator)
    z = means[component] + torch.randn(n, LATENT_DIM, generator=generator)
    return z, component


def sample_synthetic(
    n: int,
    seed: int,
    vocab_size: int = 1000,
    length: int = 10,
    temperature: float = 1.0,
    z: torch.Tensor | None = None,
) -> SyntheticSample:
    """Sample n sequences from the model defined by `seed` (weights and sampling share the seed).

    Pass `z` ([n, 2]) to condition on chosen latents instead of prior draws (component is then -1).
    """
    if n < 0 or length < 1 or vocab_size < 2 or not math.isfinite(temperature) or temperature <= 0:
        raise ValueError("need n >= 0, length >= 1, vocab_size >= 2 and a finite temperature > 0")
    generator = torch.Generator().manual_seed(seed)
    model = RandomLatentLSTM(vocab_size, generator)
    if z is None:
        z, component = sample_prior(n, generator)
    else:
        z, component = z.float(), torch.full((n,), -1, dtype=torch.long)
    with torch.no_grad():
        chunks = [
            model.sample(z[start : start + CHUNK], length, temperature, generator) for start in range(0, n, CHUNK)
        ]
    tokens = torch.cat(chunks) if chunks else torch.empty(0, length, dtype=torch.long)
    logger.debug("sampled %d synthetic sequences (seed %d)", n, seed)
    return SyntheticSample(tokens=tokens, z=z, component=component)


def format_line(ids: list[int]) -> str:
    """He et al.'s line format: each id followed by a single space (no newline)."""
    return "".join(f"{i} " for i in ids)


def generate_synthetic(
    n: int, seed: int, vocab_size: int = 1000, length: int = 10, temperature: float = 1.0
) -> list[str]:
    """Generate n synthetic sequences as text lines (without newlines); deterministic per seed."""
    sample = sample_synthetic(n, seed, vocab_size, length, temperature)
    return [format_line(row) for row in sample.tokens.tolist()]


def synthetic_splits(
    seed: int = DEFAULT_SEED, n_train: int = 16_000, n_valid: int = 2_000, n_test: int = 2_000
) -> dict[str, list[str]]:
    """Train/valid/test splits drawn from one model (one seed), in that order."""
    labeled = labeled_synthetic_splits(seed, n_train, n_valid, n_test)
    return {name: [line for _, line in rows] for name, rows in labeled.items()}


def labeled_synthetic_splits(
    seed: int = DEFAULT_SEED, n_train: int = 16_000, n_valid: int = 2_000, n_test: int = 2_000
) -> dict[str, list[tuple[int, str]]]:
    """The same splits with each line's mixture component (0-3): a label that is a function of the latent
    that generated the line, for latent probes."""
    sample = sample_synthetic(n_train + n_valid + n_test, seed)
    rows = [(c, format_line(ids)) for c, ids in zip(sample.component.tolist(), sample.tokens.tolist())]
    return {
        "train": rows[:n_train],
        "valid": rows[n_train : n_train + n_valid],
        "test": rows[n_train + n_valid :],
    }
