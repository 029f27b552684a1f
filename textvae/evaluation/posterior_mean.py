"""Approximate posterior means E_q[z|x] against model posterior means E_p[z|x] (He et al. 2019, Fig. 2).

The model posterior mean is a ratio of integrals over z, computed by quadrature on a regular grid:
E_p[z|x] = Σ_g w_g z_g p(x|z_g) p(z_g) / Σ_g w_g p(x|z_g) p(z_g), so only 1-d and 2-d latents are practical.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from textvae.config import PosteriorMeanPlotConfig
from textvae.data.batching import TokenizedSplit, make_loader
from textvae.data.tokenizers import PAD
from textvae.evaluation.common import model_device
from textvae.evaluation.likelihood import rows_within_budget
from textvae.models.base import evaluating
from textvae.models.lstm import LSTMDecoder

GRID_DIMS = (1, 2)  # latent sizes a grid can cover
LSTM_ROWS = 1024  # (document, grid point) sequences per LSTM pass: larger passes only thrash the cache
OUTPUT_BLOCK = 256  # positions per output-layer block, so that the logits stay in cache
SAFE_LOG_SUM = -60.0  # shifted sums below e^-60 may have lost terms to float32 underflow (e^-87)

Scorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class LatentGrid(NamedTuple):
    """Quadrature nodes `points` [G, Z] and the log of their weights `log_weights` [G]."""

    points: torch.Tensor
    log_weights: torch.Tensor


def latent_grid(latent_dim: int, grid_size: int, extent: float) -> LatentGrid:
    """A regular grid on [-extent, extent]^Z with trapezoid weights (a product rule in 2-d).

    Each node's weight is the cell volume h^Z, halved once per coordinate that lies on the boundary.
    """
    if latent_dim not in GRID_DIMS:
        raise ValueError(f"a latent grid needs a 1-d or 2-d latent, not {latent_dim}-d")
    if grid_size < 2:
        raise ValueError(f"a latent grid needs at least 2 points per dimension, not {grid_size}")
    axis = torch.linspace(-extent, extent, grid_size)
    log_w = torch.full((grid_size,), math.log(2 * extent / (grid_size - 1)))
    log_w[[0, -1]] -= math.log(2)
    points = torch.cartesian_prod(*[axis] * latent_dim).reshape(-1, latent_dim)
    log_weights = torch.cartesian_prod(*[log_w] * latent_dim).reshape(-1, latent_dim).sum(-1)
    return LatentGrid(points, log_weights)


def _blocked_log_sum_exp(inputs: torch.Tensor, weight: torch.Tensor, nonpositive: bool) -> torch.Tensor:
    """log Σ_v exp(inputs @ weight.T)_v per row, [P], a cache-sized block of logits at a time.

    `nonpositive`: every logit is known to be <= 0, so exp cannot overflow and no max pass is needed.
    """
    block = max(1, min(OUTPUT_BLOCK, rows_within_budget(1, len(weight)), len(inputs)))
    result = inputs.new_empty(len(inputs))
    logits = inputs.new_empty(block, len(weight))
    for start in range(0, len(inputs), block):
        out = torch.mm(inputs[start : start + block], weight.T, out=logits[: len(inputs) - start])
        result[start : start + len(out)] = out.exp_().sum(1).log_() if nonpositive else torch.logsumexp(out, dim=1)
    return result


def _log_normalizer(states: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """log Σ_v exp(layer(states))_v per row, [P], for states in [-1, 1]^H (an LSTM's outputs).

    The logits are shifted by one bound M >= every logit (bias plus the L1 norm of the weights) instead of
    a max pass per row; rows whose shifted sum falls below e^SAFE_LOG_SUM, where float32 underflow could
    cost precision, are redone with logsumexp.
    """
    shift = (layer.bias + layer.weight.abs().sum(1)).max()
    inputs = F.pad(states, (0, 1), value=1.0)  # the bias as one more input: one matmul writes the logits
    weight = torch.cat([layer.weight, (layer.bias - shift).unsqueeze(1)], dim=1)
    result = _blocked_log_sum_exp(inputs, weight, nonpositive=True)
    redo = result < SAFE_LOG_SUM
    result += shift
    if redo.any():
        weight[:, -1] = layer.bias
        result[redo] = _blocked_log_sum_exp(inputs[redo], weight, nonpositive=False)
    return result


def _lstm_log_likelihood(decoder: LSTMDecoder, tokens: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """log p(x|z) [B, G] of an LSTM decoder in eval mode, as `decoder.log_prob` but in output-layer blocks.

    The decoder's z enters only through its initial state and its inputs; the [B*G, T, V] logits of a
    plain pass are never held: per position only the target's logit and the log normaliser are needed.
    """
    n_points = len(points)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    z = points.repeat(len(tokens), 1)  # row i * G + g: document i, grid point g
    hidden, _ = decoder.hidden(inputs.repeat_interleave(n_points, 0), z)
    mask = (targets != PAD).repeat_interleave(n_points, 0)
    states, words = hidden[mask], targets.repeat_interleave(n_points, 0)[mask]
    out = decoder.output
    token_ll = (states * out.weight[words]).sum(-1) + out.bias[words] - _log_normalizer(states, out)
    return hidden.new_zeros(mask.shape).masked_scatter_(mask, token_ll).sum(-1).view(len(tokens), n_points)


def _any_log_likelihood(model, tokens: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """log p(x|z) [B, G] through the model's own decoder pass (any decoder)."""
    return model.log_likelihood(tokens, points.expand(len(tokens), -1, -1))


def _scorer(model, seq_len: int) -> tuple[Scorer, int]:
    """A function (tokens [b, T], points [g, Z]) -> log p(x|z) [b, g], and the b*g rows one call may take."""
    decoder = model.decoder
    if isinstance(decoder, LSTMDecoder):
        width = decoder.lstm.input_size + 5 * decoder.lstm.hidden_size  # inputs, gates, outputs
        rows = min(LSTM_ROWS, rows_within_budget(seq_len, width))
        return partial(_lstm_log_likelihood, decoder), rows
    return partial(_any_log_likelihood, model), rows_within_budget(seq_len, model.config.vocab_size)


def _blocks(n_docs: int, n_points: int, rows: int) -> Iterator[tuple[slice, slice]]:
    """(documents, grid points) slices covering every pair, at most `rows` pairs each (at least one)."""
    docs = max(1, min(n_docs, rows // n_points))
    step = max(1, min(n_points, rows // docs))
    for first_doc in range(0, n_docs, docs):
        for first_point in range(0, n_points, step):
            yield slice(first_doc, first_doc + docs), slice(first_point, first_point + step)


def grid_log_likelihood(model, tokens: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """log p(x|z_g) for every document and grid point, [B, G], of a model in eval mode.

    Each decoder pass holds at most LOGIT_BUDGET logits (LSTM decoders far fewer: see `_lstm_log_likelihood`).
    """
    score, rows = _scorer(model, tokens.shape[1])
    result = torch.empty(len(tokens), len(points), device=tokens.device)
    for docs, cols in _blocks(len(tokens), len(points), rows):
        result[docs, cols] = score(tokens[docs], points[cols])
    return result


@torch.inference_mode()
def model_posterior_mean(model, tokens: torch.Tensor, grid: LatentGrid) -> torch.Tensor:
    """E_p[z|x] [B, Z]: softmax over the grid of log p(x|z_g) + log p(z_g) + log w_g, then the mean of z."""
    with evaluating(model):
        points, log_weights = (t.to(tokens.device) for t in grid)
        log_joint = grid_log_likelihood(model, tokens, points) + model.prior.log_prob(points) + log_weights
        return (torch.softmax(log_joint.double(), dim=1) @ points.double()).float()


@torch.inference_mode()
def posterior_means(
    model, split: TokenizedSplit, points: int, cfg: PosteriorMeanPlotConfig, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder means E_q[z|x] and model posterior means E_p[z|x], both [N, Z] on the CPU, for the first
    `points` documents of `split` (in split order)."""
    grid = latent_grid(model.latent_dim, cfg.grid_size, cfg.extent)
    subset = TokenizedSplit(split.ids[:points])
    approx = torch.empty(len(subset), model.latent_dim)
    exact = torch.empty_like(approx)
    device = model_device(model)
    with evaluating(model):
        for batch in make_loader(subset, batch_size, shuffle=False):
            rows, batch = batch.index, batch.to(device)
            approx[rows] = model.encode(batch.data, batch.lengths).mean.float().cpu()
            exact[rows] = model_posterior_mean(model, batch.data, grid).cpu()
    return approx, exact
