"""Reconstruction BLEU with models whose reconstructions are known, prior samples, distinct-n diversity."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import sacrebleu
import torch
from conftest import tiny_lstm_vae
from test_decoding import Scripted
from torch import nn

from textvae.data.batching import TokenizedSplit
from textvae.data.tokenizers import EOS, WordTokenizer
from textvae.evaluation.text import (
    distinct_n,
    prior_samples,
    reconstruction_bleu,
    reconstruction_limit,
    reconstructions,
    sample_diversity,
    sample_quality,
    self_bleu,
    unigram_kl,
)
from textvae.generation.decoding import DecodingConfig
from textvae.models.posteriors import Deterministic, DiagonalGaussian

WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran"]
TOKENIZER = WordTokenizer.from_vocab(WORDS)
DOCS = ["the cat sat on the mat", "a dog ran", "the dog sat on a cat", "cat", "a mat on the cat ran"]


class RewritingModel(nn.Module):
    """A stand-in VAE: the posterior mean carries rewrite(document) as ids, which the decoder spells out."""

    has_latent = True

    def __init__(self, rewrite: Callable[[list[int]], list[int]], posterior: str = "deterministic") -> None:
        super().__init__()
        self.rewrite = rewrite
        self.posterior = posterior
        self.decoder = Scripted(4 + len(WORDS))
        self.anchor = nn.Parameter(torch.zeros(()))  # where model_device looks

    def encode(self, tokens: torch.Tensor, lengths: torch.Tensor):
        targets = [self.rewrite(row[1 : n + 1]) + [EOS] for row, n in zip(tokens.tolist(), lengths.tolist())]
        width = max(map(len, targets))
        mean = torch.tensor([t + [EOS] * (width - len(t)) for t in targets], dtype=torch.float)
        if self.posterior == "deterministic":
            return Deterministic(mean)
        return DiagonalGaussian(mean, torch.zeros_like(mean))


def split_of(texts: list[str]) -> TokenizedSplit:
    return TokenizedSplit(TOKENIZER.encode_batch(texts))


@pytest.mark.parametrize("posterior", ["deterministic", "gaussian"])
def test_copying_model_scores_100(posterior):
    metrics = reconstruction_bleu(RewritingModel(lambda ids: ids, posterior), split_of(DOCS), TOKENIZER, batch_size=2)
    assert metrics["recon_bleu"] == pytest.approx(100.0)
    assert metrics["recon_exact"] == 1.0
    assert metrics["recon_docs"] == len(DOCS)


def test_junk_model_scores_low_and_is_cut_at_the_length_limit():
    junk = RewritingModel(lambda ids: [TOKENIZER.encode_batch(["dog"])[0][0]] * 1000)
    split = split_of(DOCS)
    references, hypotheses = reconstructions(junk, split, TOKENIZER, batch_size=2)
    assert [len(h.split()) for h in hypotheses] == [reconstruction_limit(n) for n in split.lengths]
    metrics = reconstruction_bleu(junk, split, TOKENIZER, batch_size=2)
    assert metrics["recon_bleu"] < 5.0 and metrics["recon_exact"] == 0.0


def test_bleu_matches_sacrebleu_on_hand_made_pairs():
    hand_made = {"the cat sat on the mat": "the cat sat on a mat", "a dog ran": "a dog", "cat": "cat"}
    by_ids = {tuple(TOKENIZER.encode_batch([r])[0]): TOKENIZER.encode_batch([h])[0] for r, h in hand_made.items()}
    model = RewritingModel(lambda ids: by_ids[tuple(ids)])
    references = list(hand_made)
    metrics = reconstruction_bleu(model, split_of(references), TOKENIZER, batch_size=2)
    expected = sacrebleu.corpus_bleu(list(hand_made.values()), [references]).score
    assert 0 < metrics["recon_bleu"] < 100
    assert metrics["recon_bleu"] == pytest.approx(expected)
    assert metrics["recon_exact"] == pytest.approx(1 / 3)
    assert metrics["recon_bleu_signature"].startswith("nrefs:1")


def test_reconstructions_keep_file_order_and_limit():
    rotate = RewritingModel(lambda ids: ids[1:] + ids[:1])
    references, hypotheses = reconstructions(rotate, split_of(DOCS), TOKENIZER, batch_size=2)
    assert references == DOCS
    assert hypotheses == [" ".join(d.split()[1:] + d.split()[:1]) for d in DOCS]
    assert reconstruction_bleu(rotate, split_of(DOCS), TOKENIZER, batch_size=2, limit=2)["recon_docs"] == 2


def test_reconstruction_limit():
    assert reconstruction_limit(3) == 16
    assert reconstruction_limit(500) == reconstruction_limit(500, cap=200) == 200
    assert reconstruction_limit(torch.tensor([0, 100]), cap=150).tolist() == [10, 150]


@pytest.fixture(scope="module")
def vae():
    return tiny_lstm_vae(TOKENIZER.vocab_size, seed=2, latent_dim=2)


def test_reconstruction_bleu_runs_on_an_lstm_vae(vae):
    vae.train()
    try:
        metrics = reconstruction_bleu(vae, split_of(DOCS), TOKENIZER, batch_size=2, max_length=8)
        assert vae.training
    finally:
        vae.eval()
    assert 0.0 <= metrics["recon_bleu"] <= 100.0 and 0.0 <= metrics["recon_exact"] <= 1.0
    assert metrics["recon_max_length"] == 8
    _, hypotheses = reconstructions(vae, split_of(DOCS), TOKENIZER, batch_size=2, max_length=8)
    assert all(len(h.split()) <= 8 for h in hypotheses)


def test_reconstruction_needs_a_latent():
    lm = tiny_lstm_vae(TOKENIZER.vocab_size, type="lstm_lm")
    with pytest.raises(TypeError, match="latent"):
        reconstruction_bleu(lm, split_of(DOCS), TOKENIZER, batch_size=2)


def test_prior_samples(vae):
    cfg = DecodingConfig("sample", max_length=6)
    texts = prior_samples(vae, 7, cfg, TOKENIZER, seed=3)
    assert len(texts) == 7 and all(len(t.split()) <= 6 for t in texts)
    state = torch.random.get_rng_state()
    assert prior_samples(vae, 7, cfg, TOKENIZER, seed=3) == texts
    assert torch.equal(torch.random.get_rng_state(), state)
    z = torch.zeros(2, 2)
    greedy = prior_samples(vae, 2, DecodingConfig(max_length=6), TOKENIZER, z=z)
    assert greedy[0] == greedy[1]
    lm = tiny_lstm_vae(TOKENIZER.vocab_size, type="lstm_lm")
    assert len(prior_samples(lm, 3, cfg, TOKENIZER, seed=0)) == 3


def test_distinct_n_by_hand():
    texts = ["a b a", "a b c", ""]
    # unigrams a b a a b c: 3 unique of 6; bigrams ab ba ab bc: 3 unique of 4
    assert sample_diversity(texts) == {"distinct_1": 0.5, "distinct_2": 0.75, "mean_length": 2.0, "samples": 3}
    assert distinct_n([["x"]], 2) == 0.0
    assert sample_diversity([])["distinct_1"] == 0.0


def test_self_bleu():
    assert self_bleu(["the cat sat on the mat"] * 3) == pytest.approx(100.0)
    assert self_bleu(["the cat sat on the mat", "a dog ran far away"]) < 5.0
    assert "self_bleu" in sample_diversity(["a b", "a b"], with_self_bleu=True)


def test_unigram_kl_matches_a_hand_computed_value():
    # samples: a a b (counts a 2, b 1); data: a b c (1, 1, 1); add-one over {a, b, c}
    p = {"a": 3 / 6, "b": 2 / 6, "c": 1 / 6}
    q = {"a": 2 / 6, "b": 2 / 6, "c": 2 / 6}
    expected = sum(p[w] * math.log(p[w] / q[w]) for w in p)
    assert unigram_kl(["a a", "b"], ["a b c"]) == pytest.approx(expected, rel=1e-12)


def test_unigram_kl_is_zero_for_the_same_counts_and_grows_with_mismatch():
    assert unigram_kl(["the cat", "sat"], ["sat the", "cat"]) == 0.0
    near = unigram_kl(["the cat sat"] * 3, ["the cat sat", "the cat ran"])
    far = unigram_kl(["dog dog dog"] * 3, ["the cat sat", "the cat ran"])
    assert 0 < near < far
    assert unigram_kl([], []) == 0.0


def test_sample_quality_scores_the_samples_it_draws():
    model = tiny_lstm_vae(TOKENIZER.vocab_size, seed=1)
    scores = sample_quality(model, TOKENIZER, DOCS, n=8, seed=0, max_length=6, self_bleu_samples=5)
    texts = prior_samples(model, 8, DecodingConfig(strategy="sample", max_length=6), TOKENIZER, seed=0)
    assert scores["sample_count"] == 8
    assert scores["sample_distinct_1"] == pytest.approx(distinct_n([t.split() for t in texts], 1))
    assert scores["sample_unigram_kl"] == pytest.approx(unigram_kl(texts, DOCS))
    assert scores["sample_self_bleu"] == pytest.approx(self_bleu(texts[:5]))
    assert scores["data_mean_length"] == pytest.approx(sum(len(d.split()) for d in DOCS) / len(DOCS))
