"""Text metrics: reconstruction BLEU (encode, decode the posterior mean greedily) and sample diversity."""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Sequence

import torch
from sacrebleu.metrics import BLEU

from textvae.data.batching import TokenizedSplit, make_loader
from textvae.data.tokenizers import TextTokenizer
from textvae.evaluation.common import model_device, seeded
from textvae.generation.decoding import DecodingConfig, decode
from textvae.models.base import evaluating

RECON_MAX_LENGTH = 200  # hard cap on a reconstruction's length, in tokens


def reconstruction_limit(length: int | torch.Tensor, cap: int = RECON_MAX_LENGTH) -> int | torch.Tensor:
    """How many tokens a reconstruction of a `length`-token document may have: 2 * length + 10, capped."""
    bound = 2 * length + 10
    return bound.clamp(max=cap) if isinstance(bound, torch.Tensor) else min(bound, cap)


def reconstructions(
    model, split: TokenizedSplit, tokenizer: TextTokenizer, batch_size: int, max_length: int = RECON_MAX_LENGTH
) -> tuple[list[str], list[str]]:
    """(references, reconstructions) in file order: each document greedily decoded from its posterior mean.

    Both sides are detokenized from token ids with `tokenizer.decode`, so <unk> reads the same in both.
    """
    if not model.has_latent:
        raise TypeError("reconstruction needs a latent variable; a language model has none")
    device = model_device(model)
    cfg = DecodingConfig(strategy="greedy", max_length=max_length)
    decoded: list[list[int]] = [[] for _ in range(len(split))]
    with evaluating(model), torch.inference_mode():
        for batch in make_loader(split, batch_size, shuffle=False):
            batch = batch.to(device)
            z = model.encode(batch.data, batch.lengths).mean
            limits = reconstruction_limit(batch.lengths, max_length)
            for i, ids in zip(batch.index.tolist(), decode(model.decoder, z, cfg, max_lengths=limits)):
                decoded[i] = ids
    references = [tokenizer.decode(ids) for ids in split.ids]
    return references, [tokenizer.decode(ids) for ids in decoded]


def reconstruction_bleu(
    model,
    split: TokenizedSplit,
    tokenizer: TextTokenizer,
    batch_size: int,
    limit: int | None = None,
    max_length: int = RECON_MAX_LENGTH,
) -> dict:
    """Corpus BLEU (sacrebleu, default 13a tokenization) of greedy posterior-mean reconstructions.

    Returns recon_bleu (0-100), recon_exact (fraction reproduced exactly), recon_docs, recon_max_length
    (the cap on any reconstruction) and recon_bleu_signature (sacrebleu's, for papers). `limit`: the first
    N documents only.
    """
    if limit is not None:
        split = TokenizedSplit(split.ids[:limit])
    references, hypotheses = reconstructions(model, split, tokenizer, batch_size, max_length)
    bleu = BLEU()
    score = bleu.corpus_score(hypotheses, [references])
    exact = sum(h == r for h, r in zip(hypotheses, references))
    return {
        "recon_bleu": score.score,
        "recon_exact": exact / max(len(references), 1),
        "recon_docs": len(references),
        "recon_max_length": max_length,
        "recon_bleu_signature": str(bleu.get_signature()),
    }


def prior_samples(
    model,
    n: int,
    decoding_cfg: DecodingConfig,
    tokenizer: TextTokenizer,
    z: torch.Tensor | None = None,
    seed: int | None = None,
) -> list[str]:
    """Texts decoded from `z` [n, Z], or from n draws of the prior (none for a language model).

    With `seed`, the prior draws and the sampling are reproducible and the global RNG is left untouched.
    """
    device = model_device(model)
    rng = seeded(seed, device) if seed is not None else contextlib.nullcontext()
    with rng, evaluating(model), torch.inference_mode():
        if z is None and model.has_latent:
            z = model.prior.sample(n, device)
        ids = decode(model.decoder, None if z is None else z.to(device), decoding_cfg, n=n)
    return [tokenizer.decode(row) for row in ids]


def component_samples(
    model, n: int, decoding_cfg: DecodingConfig, tokenizer: TextTokenizer, seed: int = 0
) -> list[dict]:
    """For a mixture prior (MoG, VampPrior): n texts decoded from each component's samples.

    One dict per component: its index, mixture weight and the texts (with their diversity). Raises
    TypeError for a prior without components.
    """
    prior = model.prior
    if not hasattr(prior, "sample_component"):
        raise TypeError(f"{type(prior).__name__} has no mixture components")
    weights = prior.weights.tolist()
    out = []
    for k in range(prior.components):
        with seeded(seed + k, model_device(model)), torch.inference_mode():
            z = prior.sample_component(k, n)
        texts = prior_samples(model, n, decoding_cfg, tokenizer, z=z, seed=seed + k)
        out.append({"component": k, "weight": weights[k], "texts": texts, **sample_diversity(texts)})
    return out


def distinct_n(token_lists: Sequence[Sequence[str]], n: int) -> float:
    """Unique n-grams / total n-grams over all samples (0 when there are none)."""
    grams = [tuple(tokens[i : i + n]) for tokens in token_lists for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def self_bleu(texts: Sequence[str]) -> float:
    """Corpus BLEU of each text against all the others as references (lower: more diverse). O(n^2)."""
    if len(texts) < 2:
        return 0.0
    others = [[texts[(i + shift) % len(texts)] for i in range(len(texts))] for shift in range(1, len(texts))]
    return BLEU().corpus_score(list(texts), others).score


def sample_diversity(texts: Sequence[str], with_self_bleu: bool = False) -> dict:
    """distinct-1, distinct-2 and mean length over whitespace tokens; self-BLEU on request (quadratic cost)."""
    tokens = [text.split() for text in texts]
    metrics = {
        "distinct_1": distinct_n(tokens, 1),
        "distinct_2": distinct_n(tokens, 2),
        "mean_length": sum(map(len, tokens)) / len(tokens) if tokens else 0.0,
        "samples": len(texts),
    }
    if with_self_bleu:
        metrics["self_bleu"] = self_bleu(texts)
    return metrics


def unigram_kl(samples: Sequence[str], references: Sequence[str], alpha: float = 1.0) -> float:
    """KL(p_samples || p_references) between whitespace-token unigram distributions, in nats.

    Both distributions are smoothed by adding `alpha` to the count of every type in the union of the two
    vocabularies (so a word the samples invent, or never use, costs a finite amount). 0 for identical
    token counts; grows as the samples over- or under-use words relative to the data (Bahuleyan et al.).
    """
    p_counts = Counter(token for text in samples for token in text.split())
    q_counts = Counter(token for text in references for token in text.split())
    vocabulary = p_counts.keys() | q_counts.keys()
    if not vocabulary:
        return 0.0
    p_total = sum(p_counts.values()) + alpha * len(vocabulary)
    q_total = sum(q_counts.values()) + alpha * len(vocabulary)
    kl = 0.0
    for token in vocabulary:
        p = (p_counts[token] + alpha) / p_total
        kl += p * math.log(p / ((q_counts[token] + alpha) / q_total))
    return kl


def sample_quality(
    model,
    tokenizer: TextTokenizer,
    references: Sequence[str],
    n: int,
    seed: int = 0,
    max_length: int = RECON_MAX_LENGTH,
    self_bleu_samples: int = 200,
) -> dict:
    """Scores of n prior samples (ancestral sampling, temperature 1) against the `references` texts.

    sample_distinct_1/2, sample_self_bleu (first `self_bleu_samples` samples), sample_unigram_kl
    (KL(samples || references) of smoothed unigram distributions), sample_mean_length and
    data_mean_length (whitespace tokens), sample_count.
    """
    texts = prior_samples(model, n, DecodingConfig(strategy="sample", max_length=max_length), tokenizer, seed=seed)
    diversity = sample_diversity(texts)
    reference_lengths = [len(text.split()) for text in references]
    return {
        "sample_distinct_1": diversity["distinct_1"],
        "sample_distinct_2": diversity["distinct_2"],
        "sample_self_bleu": self_bleu(texts[:self_bleu_samples]),
        "sample_unigram_kl": unigram_kl(texts, references),
        "sample_mean_length": diversity["mean_length"],
        "data_mean_length": sum(reference_lengths) / max(len(reference_lengths), 1),
        "sample_count": len(texts),
    }
