"""Using a trained model's latent space: encode texts, and decode prior samples, reconstructions and paths.

Every function takes the model and its tokenizer; `textvae.api.Run` wraps them as methods. A text is
tokenized exactly as the training data was (the run's tokenizer, <s> and </s> added by the batcher).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from textvae.data.batching import TokenizedSplit, make_loader
from textvae.data.tokenizers import TextTokenizer
from textvae.evaluation.common import model_device
from textvae.evaluation.text import prior_samples, reconstruction_limit
from textvae.generation.decoding import DecodingConfig, decode
from textvae.models.base import evaluating


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Points (1 - t) a + t b for each t [S]: [S, Z]."""
    t = t.unsqueeze(-1)
    return (1 - t) * a + t * b


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation (White 2016) for each t [S]: [S, Z]; linear where a and b are (anti)parallel.

    The angle is taken between a and b as vectors from the origin, so the path keeps a norm typical
    of Gaussian samples instead of cutting through the low-density centre as the straight line does.
    """
    cos = torch.nn.functional.cosine_similarity(a, b, dim=0).clamp(-1, 1)
    omega = torch.arccos(cos)
    if float(torch.sin(omega).abs()) < 1e-6:
        return lerp(a, b, t)
    t = t.unsqueeze(-1)
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


def interpolation_path(a: torch.Tensor, b: torch.Tensor, steps: int, spherical: bool = False) -> torch.Tensor:
    """`steps` points from a to b [Z], both ends included: [steps, Z]."""
    if steps < 2:
        raise ValueError(f"an interpolation needs at least 2 steps (both ends), not {steps}")
    t = torch.linspace(0, 1, steps, device=a.device, dtype=a.dtype)
    return (slerp if spherical else lerp)(a, b, t)


def tokenize_texts(tokenizer: TextTokenizer, texts: Sequence[str], max_length: int | None = None) -> TokenizedSplit:
    """Token ids of raw texts (truncated to `max_length` tokens); an empty text is refused."""
    empty = [i for i, text in enumerate(texts) if not text.strip()]
    if empty:
        raise ValueError(f"text {empty[0] + 1} is empty: nothing to encode")
    ids = tokenizer.encode_batch([text.strip() for text in texts])
    return TokenizedSplit([row[:max_length] if max_length else row for row in ids])


def posterior_means(model, split: TokenizedSplit, batch_size: int = 64) -> torch.Tensor:
    """Posterior means E[z|x] [N, Z] of a split's documents, in file order (a deterministic encoder's point)."""
    if not model.has_latent:
        raise TypeError("a language model has no latent space to encode into")
    means = torch.empty(len(split), model.latent_dim, device=model_device(model))
    with evaluating(model), torch.inference_mode():
        for batch in make_loader(split, batch_size, shuffle=False):
            batch = batch.to(means.device)
            means[batch.index] = model.encode(batch.data, batch.lengths).mean
    return means


def encode_texts(
    model, tokenizer: TextTokenizer, texts: Sequence[str], batch_size: int = 64, max_length: int | None = None
) -> torch.Tensor:
    """Posterior means E[z|x] [N, Z] of raw texts, in order."""
    return posterior_means(model, tokenize_texts(tokenizer, texts, max_length), batch_size)


def decode_texts(
    model, tokenizer: TextTokenizer, z: torch.Tensor, cfg: DecodingConfig, seed: int | None = None, max_lengths=None
) -> list[str]:
    """Texts decoded from latent codes z [N, Z] (seeded sampling leaves the global RNG alone)."""
    with evaluating(model), torch.inference_mode():
        ids = decode(model.decoder, z.to(model_device(model)), cfg, max_lengths=max_lengths, seed=seed)
    return [tokenizer.decode(row) for row in ids]


def sample_texts(model, tokenizer: TextTokenizer, n: int, cfg: DecodingConfig, seed: int | None = 0) -> list[str]:
    """n texts from the prior (z ~ p(z), then the decoder; a language model just decodes)."""
    if n < 1:
        raise ValueError(f"the number of samples must be at least 1, not {n}")
    return prior_samples(model, n, cfg, tokenizer, seed=seed)


def reconstruct_texts(
    model,
    tokenizer: TextTokenizer,
    texts: Sequence[str],
    cfg: DecodingConfig,
    seed: int | None = 0,
    max_length: int | None = None,
) -> list[str]:
    """Each text decoded from its posterior mean; at most 2·len + 10 tokens (and cfg.max_length) each."""
    split = tokenize_texts(tokenizer, texts, max_length)
    z = posterior_means(model, split)
    limits = reconstruction_limit(torch.tensor([len(ids) for ids in split.ids]), cfg.max_length)
    return decode_texts(model, tokenizer, z, cfg, seed, max_lengths=limits)


def interpolate_texts(
    model,
    tokenizer: TextTokenizer,
    a: str,
    b: str,
    steps: int,
    cfg: DecodingConfig,
    spherical: bool = False,
    seed: int | None = 0,
    max_length: int | None = None,
) -> list[tuple[float, str]]:
    """(t, text) at `steps` evenly spaced points between the posterior means of a (t = 0) and b (t = 1).

    Each point may have up to 2·len + 10 tokens of the longer end text (and cfg.max_length)."""
    ends = tokenize_texts(tokenizer, [a, b], max_length)
    za, zb = posterior_means(model, ends)
    path = interpolation_path(za, zb, steps, spherical)
    limit = reconstruction_limit(max(len(ids) for ids in ends.ids), cfg.max_length)
    texts = decode_texts(model, tokenizer, path, cfg, seed, max_lengths=[limit] * steps)
    return [(round(i / (steps - 1), 6), text) for i, text in enumerate(texts)]
