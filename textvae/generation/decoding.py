"""Batched autoregressive decoding from latent codes: greedy, sampling (temperature, top-k, top-p) and beam search.

A *search* turns a decoder, latent codes and per-row length limits into token ids; searches are registered
by name (`DecodingConfig.strategy`). Greedy and sampling pick one token per row and step; beam search keeps
`beam_size` hypotheses per row, all rows' hypotheses in one decoder call per step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from textvae.data.tokenizers import BOS, EOS, PAD, UNK
from textvae.models.base import TokenDecoder, evaluating
from textvae.registry import Registry


@dataclass(frozen=True)
class DecodingConfig:
    """How to decode; `max_length` counts words, not </s>.

    Greedy and beam ignore temperature, top_k and top_p; only beam reads beam_size and length_penalty.
    Beam ranks finished hypotheses by sum log p(w_1 .. w_n </s>) / (n + 1) ** length_penalty (simple length
    normalisation over the predicted tokens, </s> included); length_penalty 0 ranks by the raw sum.
    """

    strategy: str = "greedy"
    temperature: float = 1.0
    top_k: int | None = None  # sample among the k most likely tokens only
    top_p: float | None = None  # sample from the smallest set of tokens holding probability >= top_p
    max_length: int = 100
    allow_unk: bool = True  # <pad> and <s> are never generated; <unk> only when allowed
    beam_size: int = 4  # hypotheses kept per row (beam only)
    length_penalty: float = 1.0  # alpha >= 0 of the length normalisation (beam only)

    def __post_init__(self) -> None:
        if self.strategy not in SEARCHES:
            raise ValueError(f"unknown decoding strategy {self.strategy!r} (known: {', '.join(SEARCHES)})")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, not {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be at least 1, not {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], not {self.top_p}")
        if self.max_length < 0:
            raise ValueError(f"max_length must be non-negative, not {self.max_length}")
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be at least 1, not {self.beam_size}")
        if not 0 <= self.length_penalty < float("inf"):
            raise ValueError(f"length_penalty must be finite and non-negative, not {self.length_penalty}")

    @property
    def banned(self) -> tuple[int, ...]:
        """Token ids never generated."""
        return (PAD, BOS) if self.allow_unk else (PAD, BOS, UNK)


# (decoder, z [N, Z] | None, limits [N] words per row, cfg, generator) -> token ids per row, without </s>
Search = Callable[
    [TokenDecoder, torch.Tensor | None, torch.Tensor, DecodingConfig, torch.Generator | None], list[list[int]]
]
SEARCHES: Registry[Search] = Registry("decoding strategy")


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Set every logit below the k-th largest of its row to -inf (ties with the k-th are kept)."""
    kth = logits.topk(min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep each row's smallest set of most likely tokens whose probability reaches p (at least one)."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    mass_before = probs.cumsum(-1) - probs
    drop_sorted = mass_before >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def allowed_logits(logits: torch.Tensor, cfg: DecodingConfig) -> torch.Tensor:
    """Next-token logits [N, V] as float, with the banned ids at -inf."""
    return logits.float().index_fill(-1, torch.tensor(cfg.banned, device=logits.device), float("-inf"))


def next_token_probs(logits: torch.Tensor, cfg: DecodingConfig) -> torch.Tensor:
    """The sampling distribution [N, V] from next-token logits [N, V]: banned ids, temperature, top-k, top-p."""
    logits = allowed_logits(logits, cfg) / cfg.temperature
    if cfg.top_k is not None:
        logits = top_k_filter(logits, cfg.top_k)
    if cfg.top_p is not None:
        logits = top_p_filter(logits, cfg.top_p)
    return logits.softmax(-1)


def token_by_token(
    decoder: TokenDecoder,
    z: torch.Tensor | None,
    limits: torch.Tensor,
    choose: Callable[[torch.Tensor], torch.Tensor],
) -> list[list[int]]:
    """Feed <s>, then each chosen token, until every row has emitted </s> or reached its limit.

    `choose` maps next-token logits [N, V] to token ids [N]. Finished rows keep being fed </s> (their
    outputs are ignored), since a decoder's state cannot in general be cut down to the active rows.
    """
    token = torch.full((len(limits),), BOS, dtype=torch.long, device=limits.device)
    finished = limits <= 0
    state, steps = None, []
    for step in range(int(limits.max()) if len(limits) else 0):
        logits, state = decoder.logits(token.unsqueeze(1), z, state)
        token = choose(logits[:, -1]).masked_fill(finished, EOS)
        steps.append(token)
        finished = finished | (token == EOS) | (limits <= step + 1)
        if bool(finished.all()):
            break
    rows = torch.stack(steps, dim=1).tolist() if steps else [[] for _ in range(len(limits))]
    return [_until_eos(row)[:limit] for row, limit in zip(rows, limits.tolist())]


def _until_eos(ids: list[int]) -> list[int]:
    return ids[: ids.index(EOS)] if EOS in ids else ids


@SEARCHES.register("greedy")
def greedy_search(decoder, z, limits, cfg, generator=None) -> list[list[int]]:
    """The most likely next token at every step (banned ids excluded)."""
    return token_by_token(decoder, z, limits, lambda logits: allowed_logits(logits, cfg).argmax(-1))


@SEARCHES.register("sample")
def sample_search(decoder, z, limits, cfg, generator=None) -> list[list[int]]:
    """Ancestral sampling from the filtered, tempered next-token distribution."""

    def choose(logits: torch.Tensor) -> torch.Tensor:
        return torch.multinomial(next_token_probs(logits, cfg), 1, generator=generator).squeeze(1)

    return token_by_token(decoder, z, limits, choose)


@SEARCHES.register("beam")
def beam_search(
    decoder: TokenDecoder,
    z: torch.Tensor | None,
    limits: torch.Tensor,
    cfg: DecodingConfig,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """Beam search for each row's most likely sequence under the length-normalised score (see DecodingConfig).

    Every step feeds all rows x beam_size hypotheses to the decoder at once and keeps, per row, the
    beam_size best continuations (words or </s>) of its live hypotheses by their summed log-probabilities,
    the decoder's own (not renormalised after banning ids). A hypothesis that picks </s> is finished and
    leaves the beam; at its row's limit only </s> may follow, and its log-prob is added, so every finished
    score is that of w_1 .. w_n </s>. A row stops when its best finished score cannot be beaten by any live
    hypothesis (log-probs are <= 0, so a live one can at best keep its sum over the longest length left),
    or when none is left. With beam_size 1 this is greedy search. Deterministic: `generator` is unused.
    The decoder's state is reordered with its `reorder_state(state, index)`; see `_reorder`.
    """
    rows, width = len(limits), cfg.beam_size
    if not rows:
        return []
    device, longest = limits.device, int(limits.max())
    flat_z = None if z is None else z.repeat_interleave(width, dim=0)
    banned = torch.tensor(cfg.banned, device=device)
    # summed log-probs of each row's live hypotheses (-inf: none); only one at the start, so that the
    # first step does not offer every continuation `width` times
    scores = torch.full((rows, width), float("-inf"), device=device)
    scores[:, 0] = 0.0
    words = torch.empty(rows, width, 0, dtype=torch.long, device=device)  # each live hypothesis's words
    best = torch.full((rows,), float("-inf"), device=device)  # each row's best finished score
    best_words = torch.full((rows, longest), EOS, dtype=torch.long, device=device)
    best_length = torch.zeros(rows, dtype=torch.long, device=device)
    largest_divisor = (limits + 1).float() ** cfg.length_penalty  # the longest finish a row allows
    first_slot = torch.arange(rows, device=device).unsqueeze(1) * width
    tokens = torch.full((rows * width,), BOS, dtype=torch.long, device=device)
    state = None
    for step in range(longest + 1):
        logits, state = decoder.logits(tokens.unsqueeze(1), flat_z, state)
        log_probs = logits[:, -1].float().log_softmax(-1).index_fill(-1, banned, float("-inf"))
        vocab = log_probs.shape[-1]
        log_probs = log_probs.view(rows, width, vocab)
        only_eos = (limits == step).view(rows, 1, 1) & (torch.arange(vocab, device=device) != EOS)
        candidates = (scores.unsqueeze(-1) + log_probs.masked_fill(only_eos, float("-inf"))).view(rows, -1)
        top, index = candidates.topk(width, dim=-1)  # [rows, width], by the summed log-prob
        beam, token = index // vocab, index % vocab
        prefix = words.gather(1, beam.unsqueeze(-1).expand(-1, -1, step))
        ends = (token == EOS) & top.isfinite()
        finished = top.masked_fill(~ends, float("-inf")) / float(step + 1) ** cfg.length_penalty
        candidate, slot = finished.max(-1)
        better = candidate > best
        best = torch.where(better, candidate, best)
        best_length = best_length.masked_fill(better, step)
        chosen = prefix[torch.arange(rows, device=device), slot]
        best_words[:, :step] = torch.where(better.unsqueeze(1), chosen, best_words[:, :step])
        scores = top.masked_fill(token == EOS, float("-inf"))
        done = best >= scores.max(-1).values / largest_divisor
        if bool(done.all()):
            break
        scores = scores.masked_fill(done.unsqueeze(1), float("-inf"))
        words = torch.cat([prefix, token.unsqueeze(-1)], dim=-1)
        tokens = token.masked_fill(scores.isinf(), EOS).view(-1)
        if width > 1:
            state = _reorder(decoder, state, (first_slot + beam).view(-1))
    return [ids[:length] for ids, length in zip(best_words.tolist(), best_length.tolist())]


def _reorder(decoder: TokenDecoder, state, index: torch.Tensor):
    """The decoder state of rows `index`, by `decoder.reorder_state(state, index)`.

    Without that method only states that hold nothing per row (None, a plain number such as a step count)
    can be followed; anything else raises rather than guess which dimension is the batch.
    """
    reorder = getattr(decoder, "reorder_state", None)
    if reorder is not None:
        return reorder(state, index)
    if state is None or isinstance(state, int | float):
        return state
    raise TypeError(
        f"beam search needs {type(decoder).__name__}.reorder_state(state, index) to follow its "
        f"{type(state).__name__} state (or beam_size 1)"
    )


def decode(
    decoder: TokenDecoder,
    z: torch.Tensor | None,
    cfg: DecodingConfig = DecodingConfig(),
    *,
    n: int | None = None,
    max_lengths: Sequence[int] | torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
) -> list[list[int]]:
    """Decode one sequence per row of z [N, Z] (or `n` rows from a language model, z None).

    Returns token ids without <s> and </s>. `max_lengths` [N] caps each row below `cfg.max_length`.
    Sampling draws from `generator`, or a fresh one seeded with `seed`, or the global RNG. The decoder
    runs in eval mode under inference mode, and is left in the mode it was in.
    """
    device = z.device if z is not None else _device(decoder)
    rows = _row_count(z, n)
    limits = torch.full((rows,), cfg.max_length, dtype=torch.long, device=device)
    if max_lengths is not None:
        limits = limits.clamp(max=torch.as_tensor(max_lengths, dtype=torch.long, device=device)).clamp(min=0)
    positions = getattr(decoder, "max_positions", None)
    if positions:  # <s> and the words are fed (beam also feeds the last, to score </s>): positions - 1 words
        limits = limits.clamp(max=positions - 1)
    if seed is not None:
        if generator is not None:
            raise ValueError("give a generator or a seed, not both")
        generator = torch.Generator(device).manual_seed(seed)
    with evaluating(decoder), torch.inference_mode():
        return SEARCHES[cfg.strategy](decoder, z, limits, cfg, generator)


def _row_count(z: torch.Tensor | None, n: int | None) -> int:
    if z is None:
        if n is None:
            raise ValueError("decoding without a latent needs the number of sequences n")
        return n
    if z.dim() != 2:
        raise ValueError(f"z must be [N, Z], not {list(z.shape)}")
    if n is not None and n != len(z):
        raise ValueError(f"n={n} but z has {len(z)} rows")
    return len(z)


def _device(module: torch.nn.Module) -> torch.device:
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")
