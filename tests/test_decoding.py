"""Autoregressive decoding: greedy against re-scored prefixes, sampling against the softmax it draws from."""

from __future__ import annotations

import copy
import itertools

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


@pytest.mark.parametrize("strategy", ["greedy", "sample", "beam"])
def test_specials_are_never_generated(strategy):
    decoder = FixedLogits([9.0, 8.5, 9.0, -2.0, 0.0, 0.1, 0.2, 0.3, 0.4])  # <pad>, <s>, <unk> most likely
    outputs = decode(decoder, None, DecodingConfig(strategy, max_length=20), n=50, seed=0)
    emitted = {token for ids in outputs for token in ids}
    assert not emitted & {PAD, BOS, EOS}
    assert UNK in emitted
    no_unk = decode(decoder, None, DecodingConfig(strategy, max_length=20, allow_unk=False), n=50, seed=0)
    assert not {token for ids in no_unk for token in ids} & {PAD, BOS, UNK, EOS}


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_rows_stop_at_eos_and_at_their_length_limits(strategy):
    z = scripts([4, 5, 6], [7], [], [8] * 8)  # the last repeats 8 forever
    assert decode(Scripted(), z, DecodingConfig(strategy, max_length=20)) == [[4, 5, 6], [7], [], [8] * 20]
    assert decode(Scripted(), z, DecodingConfig(strategy, max_length=2)) == [[4, 5], [7], [], [8, 8]]
    capped = decode(Scripted(), z, DecodingConfig(strategy, max_length=20), max_lengths=[1, 5, 5, 3])
    assert capped == [[4], [7], [], [8, 8, 8]]
    assert decode(Scripted(), z, DecodingConfig(strategy, max_length=0)) == [[], [], [], []]


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
    "bad",
    [
        dict(strategy="nucleus"),
        dict(temperature=0.0),
        dict(top_k=0),
        dict(top_p=0.0),
        dict(top_p=1.5),
        dict(strategy="beam", beam_size=0),
        dict(strategy="beam", beam_size=-2),
        dict(strategy="beam", length_penalty=-0.5),
        dict(strategy="beam", length_penalty=float("nan")),
    ],
)
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        DecodingConfig(**bad)


# Beam search: against greedy, against exhaustive enumeration, and on the LSTM and transformer decoders.


class Markov(TokenDecoder):
    """Next-token logits from row i's table z[i, 0], indexed by the previous token; no state (None)."""

    def __init__(self, tables: torch.Tensor) -> None:  # [rows, V, V] logits
        super().__init__()
        self.latent_dim = 1
        self.register_buffer("tables", tables)

    def logits(self, inputs, z, state=None):
        return self.tables[z[:, :1].long(), inputs], state


def sequence_log_probs(decoder: TokenDecoder, z_row: torch.Tensor, seqs: list[list[int]]) -> torch.Tensor:
    """log p(w_1 .. w_n </s> | z) of each sequence [S], by one pass of the decoder over the padded batch."""
    width = max(map(len, seqs)) + 2
    tokens = torch.tensor([[BOS, *seq, EOS] + [PAD] * (width - len(seq) - 2) for seq in seqs])
    with torch.no_grad():
        return decoder.log_prob(tokens, z_row.view(1, 1, -1).expand(len(seqs), 1, -1))[:, 0]


def every_sequence(words: list[int], longest: int) -> list[list[int]]:
    return [list(seq) for n in range(longest + 1) for seq in itertools.product(words, repeat=n)]


def enumerated_best(decoder, z_row, words, limit, alpha) -> tuple[list[int], float]:
    """The sequence of at most `limit` words with the best length-normalised score, and that score."""
    seqs = every_sequence(words, limit)
    scores = sequence_log_probs(decoder, z_row, seqs) / torch.tensor([len(s) + 1.0 for s in seqs]) ** alpha
    best = int(scores.argmax())
    return seqs[best], scores[best].item()


@pytest.fixture(scope="module")
def transformer():
    """A tiny transformer VAE (max_length 8: at most 7 words) with large random weights, in eval mode."""
    from textvae.config import ModelConfig
    from textvae.models.model import build_model

    spec = dict(d_model=16, n_heads=2, ff_dim=32, encoder_layers=1, decoder_layers=2, dropout=0.0, max_length=8)
    torch.manual_seed(0)
    model = build_model(ModelConfig(type="transformer_vae", latent_dim=2, transformer=spec), VOCAB).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.5)
        model.decoder.output_bias[EOS] += 1.5  # so that rows end at various lengths
    return model


@pytest.mark.parametrize("model", ["vae", "transformer"])
@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_beam_of_one_is_greedy(request, z, model, alpha):
    decoder = request.getfixturevalue(model).decoder
    limits = [i % 13 for i in range(len(z))]
    greedy = decode(decoder, z, DecodingConfig(max_length=MAX_LENGTH), max_lengths=limits)
    cfg = DecodingConfig("beam", beam_size=1, length_penalty=alpha, max_length=MAX_LENGTH)
    assert decode(decoder, z, cfg, max_lengths=limits) == greedy
    capped = [min(limit, getattr(decoder, "max_positions", 100) - 1) for limit in limits]
    assert any(0 < len(ids) < limit for ids, limit in zip(greedy, capped)), "no row stopped at </s>"
    assert any(0 < len(ids) == limit for ids, limit in zip(greedy, capped)), "no row reached its limit"


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, 2.0])
def test_beam_holding_every_sequence_finds_the_best_one(alpha):
    """Markov tables, 3 words, <= 3 words per row: 40 sequences, and beam_size 40 must find the optimum."""
    vocab, rows = 7, 6
    tables = torch.randn(rows, vocab, vocab, generator=torch.Generator().manual_seed(5)) * 2
    decoder, z_rows = Markov(tables), torch.arange(rows, dtype=torch.float).unsqueeze(1)
    limits = [3, 3, 2, 1, 0, 3]
    cfg = DecodingConfig("beam", beam_size=40, length_penalty=alpha, max_length=3, allow_unk=False)
    outputs = decode(decoder, z_rows, cfg, max_lengths=limits)
    best = [enumerated_best(decoder, z_row, [4, 5, 6], limit, alpha)[0] for z_row, limit in zip(z_rows, limits)]
    assert outputs == best
    assert len({len(ids) for ids in best}) > 1, "every optimum has the same length: a weak table"


@pytest.mark.parametrize("model", ["vae", "transformer"])
@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_beam_holding_every_sequence_on_real_decoders(request, z, model, alpha):
    """6 words (<unk> allowed), <= 3 words: 259 sequences; beam_size 259 reaches the enumerated optimum."""
    decoder = request.getfixturevalue(model).decoder
    words = [UNK, *range(EOS + 1, VOCAB)]
    cfg = DecodingConfig("beam", beam_size=259, length_penalty=alpha, max_length=3)
    outputs = decode(decoder, z, cfg)
    for z_row, ids in zip(z, outputs):
        best, best_score = enumerated_best(decoder, z_row, words, 3, alpha)
        score = sequence_log_probs(decoder, z_row, [ids]).item() / (len(ids) + 1) ** alpha
        assert score == pytest.approx(best_score, abs=1e-5), (ids, best)


def test_beam_finds_what_greedy_misses():
    """<s> -> a (0.55) or b (0.45); a -> a, b or </s> (about 1/3 each); b -> </s> (0.98)."""
    a, b, vocab = 4, 5, 6
    probs = torch.full((vocab, vocab), 1e-6)
    probs[BOS, [a, b]] = torch.tensor([0.55, 0.45])
    probs[a, [a, b, EOS]] = torch.tensor([0.34, 0.33, 0.33])
    probs[b, [a, b, EOS]] = torch.tensor([0.01, 0.01, 0.98])
    probs[[PAD, UNK, EOS]] = 1.0
    decoder, z_row = Markov(probs.log().unsqueeze(0)), torch.zeros(1, 1)
    greedy = decode(decoder, z_row, DecodingConfig(max_length=2, allow_unk=False))[0]
    beam = decode(decoder, z_row, DecodingConfig("beam", beam_size=2, length_penalty=0.0, max_length=2))[0]
    assert (greedy, beam) == ([a, a], [b])
    greedy_score, beam_score = sequence_log_probs(decoder, z_row[0], [greedy, beam]).tolist()
    assert greedy_score < beam_score - 1.0
    assert enumerated_best(decoder, z_row[0], [a, b], 2, 0.0) == ([b], pytest.approx(beam_score))


@pytest.mark.parametrize("model", ["vae", "transformer"])
def test_beam_scores_at_least_as_well_as_greedy(request, z, model):
    decoder = request.getfixturevalue(model).decoder
    greedy = decode(decoder, z, DecodingConfig(max_length=MAX_LENGTH))
    beam = decode(decoder, z, DecodingConfig("beam", beam_size=4, length_penalty=0.0, max_length=MAX_LENGTH))
    rows = zip(z, greedy, beam)
    gains = torch.stack(
        [sequence_log_probs(decoder, z_row, [b]) - sequence_log_probs(decoder, z_row, [g]) for z_row, g, b in rows]
    )
    assert (gains >= -1e-5).all(), gains
    assert (gains > 1e-3).any(), "beam never beat greedy: the test cannot tell them apart"


@pytest.mark.parametrize("model", ["vae", "transformer"])
def test_beam_rows_are_independent_and_respect_limits_and_bans(request, z, model):
    decoder = request.getfixturevalue(model).decoder
    cfg = DecodingConfig("beam", beam_size=3, max_length=MAX_LENGTH, allow_unk=False)
    limits = [(3 * i) % 14 for i in range(len(z))]
    together = decode(decoder, z, cfg, max_lengths=limits)
    alone = [decode(decoder, z[i : i + 1], cfg, max_lengths=limits[i : i + 1])[0] for i in range(len(z))]
    assert together == alone
    assert all(len(ids) <= limit for ids, limit in zip(together, limits))
    assert not {token for ids in together for token in ids} & {PAD, BOS, UNK, EOS}
    assert any(together), "every row is empty"


def test_beam_needs_reorder_state_for_a_per_row_state():
    class Stateful(FixedLogits):
        def logits(self, inputs, z, state=None):
            return super().logits(inputs, z)[0], torch.zeros(len(inputs))

    decoder = Stateful(LOGITS)
    assert decode(decoder, None, DecodingConfig("beam", beam_size=1, max_length=3), n=2)  # nothing to reorder
    with pytest.raises(TypeError, match="reorder_state"):
        decode(decoder, None, DecodingConfig("beam", beam_size=2, max_length=3), n=2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_beam_on_cuda_matches_cpu(vae, z):
    decoder = copy.deepcopy(vae.decoder).cuda()
    cfg = DecodingConfig("beam", beam_size=3, max_length=MAX_LENGTH)
    on_cuda = decode(decoder, z.cuda(), cfg, max_lengths=torch.arange(len(z)).cuda())
    on_cpu = decode(vae.decoder, z, cfg, max_lengths=torch.arange(len(z)))
    for z_row, gpu_ids, cpu_ids in zip(z, on_cuda, on_cpu):
        lengths = torch.tensor([len(gpu_ids) + 1.0, len(cpu_ids) + 1.0])
        scores = sequence_log_probs(vae.decoder, z_row, [gpu_ids, cpu_ids]) / lengths  # length_penalty 1
        assert scores[0].item() == pytest.approx(scores[1].item(), abs=1e-4)
