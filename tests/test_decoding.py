"""Autoregressive decoding: greedy against re-scored prefixes, sampling against the softmax it draws from."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_lstm_vae
from scipy.stats import chi2

from textvae.data.tokenizers import BOS, EOS, PAD, UNK
from textvae.generation.decoding import DecodingConfig, decode, next_token_probs, top_k_filter, top_p_filter
from textvae.models.base import TokenDecoder

VOCAB = 9  # 4 specials + 5 words
MAX_LENGTH = 12


class FixedLogits(TokenDecoder):
    """The same next-token logits at every step, whatever the input and z."""

    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.latent_dim = 0
        self.register_buffer("fixed", torch.tensor(logits))

    def logits(self, inputs, z, state=None):
        return self.fixed.expand(*inputs.shape, -1), state


class Scripted(TokenDecoder):
    """Emits row i's script (z[i], token ids padded with </s>) one token per step; the state counts steps."""

    def __init__(self, vocab: int = VOCAB) -> None:
        super().__init__()
        self.latent_dim = 0
        self.vocab = vocab

    def logits(self, inputs, z, state=None):
        start = 0 if state is None else state
        steps = torch.arange(start, start + inputs.shape[1]).clamp(max=z.shape[1] - 1)
        targets = z[:, steps].long()  # [N, t]
        return 10.0 * torch.nn.functional.one_hot(targets, self.vocab).float(), start + inputs.shape[1]


def scripts(*rows: list[int], width: int = 8) -> torch.Tensor:
    return torch.tensor([row + [EOS] * (width - len(row)) for row in rows], dtype=torch.float)


@pytest.fixture(scope="module")
def vae():
    return tiny_lstm_vae(VOCAB, seed=3, latent_dim=2)


@pytest.fixture(scope="module")
def z() -> torch.Tensor:
    return torch.randn(16, 2, generator=torch.Generator().manual_seed(0)) * 2


def rescored_logits(decoder: TokenDecoder, z_row: torch.Tensor, prefix: list[int]) -> torch.Tensor:
    """Next-token logits after <s> + prefix, from one pass over the whole prefix."""
    inputs = torch.tensor([[BOS, *prefix]])
    with torch.no_grad():
        return decoder.logits(inputs, z_row.unsqueeze(0))[0][0, -1]


def allowed(logits: torch.Tensor) -> torch.Tensor:
    return logits.index_fill(0, torch.tensor([PAD, BOS]), float("-inf"))


def test_greedy_follows_argmax_of_rescored_prefixes(vae, z):
    outputs = decode(vae.decoder, z, DecodingConfig(max_length=MAX_LENGTH))
    assert len(outputs) == len(z)
    assert any(len(ids) < MAX_LENGTH for ids in outputs), "no row stopped: </s> handling untested"
    for z_row, ids in zip(z, outputs):
        for t, token in enumerate(ids):
            assert allowed(rescored_logits(vae.decoder, z_row, ids[:t])).argmax().item() == token
        if len(ids) < MAX_LENGTH:
            assert allowed(rescored_logits(vae.decoder, z_row, ids)).argmax().item() == EOS


def test_greedy_is_deterministic_and_restores_training_mode(vae, z):
    cfg = DecodingConfig(max_length=MAX_LENGTH)
    vae.decoder.train()
    try:
        first = decode(vae.decoder, z, cfg)
        assert vae.decoder.training
    finally:
        vae.decoder.eval()
    assert decode(vae.decoder, z, cfg) == first


@pytest.mark.parametrize("cfg", [dict(top_k=1), dict(top_p=1e-6), dict(top_k=1, temperature=5.0)])
def test_degenerate_sampling_equals_greedy(vae, z, cfg):
    greedy = decode(vae.decoder, z, DecodingConfig(max_length=MAX_LENGTH))
    assert decode(vae.decoder, z, DecodingConfig("sample", max_length=MAX_LENGTH, **cfg), seed=1) == greedy


def test_sampling_is_reproducible(vae, z):
    cfg = DecodingConfig("sample", max_length=MAX_LENGTH)
    first = decode(vae.decoder, z, cfg, seed=7)
    assert decode(vae.decoder, z, cfg, seed=7) == first
    assert decode(vae.decoder, z, cfg, generator=torch.Generator().manual_seed(7)) == first
    assert decode(vae.decoder, z, cfg, seed=8) != first
    with pytest.raises(ValueError, match="not both"):
        decode(vae.decoder, z, cfg, seed=7, generator=torch.Generator())


def test_top_k_sampling_stays_among_k_most_likely(vae, z):
    k = 2
    outputs = decode(vae.decoder, z, DecodingConfig("sample", top_k=k, max_length=MAX_LENGTH), seed=0)
    for z_row, ids in zip(z, outputs):
        for t, token in enumerate(ids + ([EOS] if len(ids) < MAX_LENGTH else [])):
            assert token in allowed(rescored_logits(vae.decoder, z_row, ids[:t])).topk(k).indices.tolist()


LOGITS = [3.0, 0.2, 2.5, -0.3, 0.9, 1.4, -1.0, 0.5, 1.1]  # <pad> and <s> most likely: they must never come out


def expected_first_token(temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None):
    """The first-token distribution worked out directly: ban <pad>/<s>, temper, keep top-k / nucleus."""
    logits = torch.tensor(LOGITS, dtype=torch.float64)
    logits[[PAD, BOS]] = float("-inf")
    probs = (logits / temperature).softmax(0)
    order = probs.argsort(descending=True).tolist()
    keep = order[:top_k] if top_k else order
    if top_p is not None:
        mass, nucleus = 0.0, []
        for i in keep:
            nucleus.append(i)
            mass += probs[i].item()
            if mass >= top_p:
                break
        keep = nucleus
    mask = torch.zeros_like(probs)
    mask[keep] = 1.0
    return probs * mask / (probs * mask).sum()


@pytest.mark.parametrize(
    "cfg", [dict(), dict(temperature=0.5), dict(temperature=2.0), dict(top_k=3), dict(top_p=0.8, temperature=1.5)]
)
def test_sampled_first_tokens_follow_the_filtered_softmax(cfg):
    n = 20_000
    outputs = decode(FixedLogits(LOGITS), None, DecodingConfig("sample", max_length=1, **cfg), n=n, seed=0)
    counts = torch.bincount(torch.tensor([ids[0] if ids else EOS for ids in outputs]), minlength=len(LOGITS))
    expected = expected_first_token(**cfg) * n
    support = expected > 0
    assert counts[~support].sum() == 0
    statistic = (((counts[support] - expected[support]) ** 2) / expected[support]).sum().item()
    assert statistic < chi2.ppf(0.999, int(support.sum()) - 1)


def test_next_token_probs_match_the_direct_computation():
    cfg = dict(temperature=0.7, top_k=4, top_p=0.9)
    probs = next_token_probs(torch.tensor([LOGITS]), DecodingConfig("sample", **cfg))[0]
    assert torch.allclose(probs.double(), expected_first_token(**cfg), atol=1e-6)


def test_filters_keep_the_right_tokens():
    logits = torch.tensor([[1.0, 4.0, 2.0, 3.0], [0.0, 0.0, 5.0, -1.0]])
    kept_k = top_k_filter(logits, 2).isfinite()
    assert kept_k.tolist() == [[False, True, False, True], [True, True, True, False]]  # ties with the k-th kept
    assert top_k_filter(logits, 10).isfinite().all()
    kept_p = top_p_filter(logits, 0.5).isfinite()
    assert kept_p.tolist() == [[False, True, False, False], [False, False, True, False]]
    assert top_p_filter(logits, 1.0).isfinite().all()


@pytest.mark.parametrize("strategy", ["greedy", "sample"])
def test_specials_are_never_generated(strategy):
    decoder = FixedLogits([9.0, 8.5, 9.0, -2.0, 0.0, 0.1, 0.2, 0.3, 0.4])  # <pad>, <s>, <unk> most likely
    outputs = decode(decoder, None, DecodingConfig(strategy, max_length=20), n=50, seed=0)
    emitted = {token for ids in outputs for token in ids}
    assert not emitted & {PAD, BOS, EOS}
    assert UNK in emitted
    no_unk = decode(decoder, None, DecodingConfig(strategy, max_length=20, allow_unk=False), n=50, seed=0)
    assert not {token for ids in no_unk for token in ids} & {PAD, BOS, UNK, EOS}


def test_rows_stop_at_eos_and_at_their_length_limits():
    z = scripts([4, 5, 6], [7], [], [8] * 8)  # the last repeats 8 forever
    assert decode(Scripted(), z, DecodingConfig(max_length=20)) == [[4, 5, 6], [7], [], [8] * 20]
    assert decode(Scripted(), z, DecodingConfig(max_length=2)) == [[4, 5], [7], [], [8, 8]]
    capped = decode(Scripted(), z, DecodingConfig(max_length=20), max_lengths=[1, 5, 5, 3])
    assert capped == [[4], [7], [], [8, 8, 8]]
    assert decode(Scripted(), z, DecodingConfig(max_length=0)) == [[], [], [], []]


def test_finished_rows_stop_feeding_the_decoder():
    """After </s> a row is fed </s> only, and decoding stops once every row has finished."""
    fed: list[torch.Tensor] = []

    class Recording(Scripted):
        def logits(self, inputs, z, state=None):
            fed.append(inputs[:, 0].clone())
            return super().logits(inputs, z, state)

    decode(Recording(), scripts([4, 5, 6], [7]), DecodingConfig(max_length=20))
    assert torch.stack(fed).tolist() == [[BOS, BOS], [4, 7], [5, EOS], [6, EOS]]


def test_language_model_decodes_n_rows():
    lm = tiny_lstm_vae(VOCAB, seed=1, type="lstm_lm")
    outputs = decode(lm.decoder, None, DecodingConfig("sample", max_length=5), n=4, seed=0)
    assert len(outputs) == 4 and all(len(ids) <= 5 for ids in outputs)
    with pytest.raises(ValueError, match="number of sequences"):
        decode(lm.decoder, None)


@pytest.mark.parametrize(
    "bad", [dict(strategy="beam"), dict(temperature=0.0), dict(top_k=0), dict(top_p=0.0), dict(top_p=1.5)]
)
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        DecodingConfig(**bad)
