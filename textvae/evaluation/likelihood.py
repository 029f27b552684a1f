"""Likelihood metrics at β = 1: `elbo_nll` (reconstruction + KL) and `iw_nll` (importance-weighted bound).

Both are per-document means in nats; PPL = exp(total NLL / predicted tokens), `</s>` counted, `<s>` not.
For images (`ImageBatch`es) they are nats per image, with no PPL, counted as n_images / n_pixels.
`iw_nll` can also sample from the encoder's posterior refined by SVI (Kim et al. 2018): `iw_nll_svi`.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import DataLoader

from textvae.config import SVIConfig
from textvae.evaluation.common import model_device, seeded
from textvae.inference.svi import refine as run_svi
from textvae.modality import MODALITIES
from textvae.models.base import frozen
from textvae.models.posteriors import DiagonalGaussian

LOGIT_BUDGET = 2**26  # logits held at once (floats) when batching samples x documents


@torch.inference_mode()
def elbo_nll(model, loader: DataLoader, n_samples: int = 1, seed: int = 0) -> dict[str, float]:
    """-ELBO per document, the reconstruction term estimated with `n_samples` z.

    The KL is exact for the standard-normal prior and a Monte Carlo estimate on the same z otherwise. A
    deterministic encoder has no ELBO: only `rec` (-log p(x|z = encoder output)) and its `rec_ppl` are given.
    """
    model.eval()
    device = model_device(model)
    rec_total = kl_total = 0.0
    n_docs = n_tokens = 0
    with seeded(seed, device):
        for batch in loader:
            batch = batch.to(device)
            out = model(batch.data, batch.lengths, n_samples=n_samples)
            rec_total -= out.log_likelihood.mean(1).sum().item()
            if out.kl is not None:
                kl_total += out.kl.sum().item()
            n_docs += len(batch)
            n_tokens += batch.n_predicted
    modality = MODALITIES[batch.modality]
    counts = modality.counts(n_docs, n_tokens)
    if model.has_latent and not model.stochastic:
        return {"rec": rec_total / n_docs, **modality.perplexity_of("rec_ppl", rec_total, n_tokens), **counts}
    total = rec_total + kl_total
    return {
        "elbo_nll": total / n_docs,
        "rec": rec_total / n_docs,
        "kl": kl_total / n_docs,
        **modality.perplexity_of("ppl", total, n_tokens),
        **counts,
    }


def rows_within_budget(seq_len: int, width: int) -> int:
    """Rows of `seq_len` x `width` floats that fit in LOGIT_BUDGET (at least one)."""
    return max(1, LOGIT_BUDGET // max(1, seq_len * width))


def svi_posterior(model, tokens: torch.Tensor, posterior: DiagonalGaussian, cfg: SVIConfig) -> DiagonalGaussian:
    """q(z|x) refined by SVI on each document's -log p(x|z) + KL (β = 1, one z per step) from `posterior`."""

    def neg_elbo(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        q = DiagonalGaussian(mean, logvar)
        z = q.rsample(1)
        return -model.log_likelihood(tokens, z)[:, 0] + model.kl(q, z)

    # cuDNN's LSTM backward needs training mode; the gradients are with respect to the posterior only
    with torch.backends.cudnn.flags(enabled=False), frozen(model.parameters()):
        refined = run_svi(neg_elbo, posterior.mean, posterior.logvar, cfg)
    return DiagonalGaussian(refined.mean, refined.logvar)


def _rows(lengths: torch.Tensor | None, start: int, n: int) -> torch.Tensor | None:
    return None if lengths is None else lengths[start : start + n]


def iw_log_marginal(
    model, tokens: torch.Tensor, lengths: torch.Tensor | None, k: int, chunk: int, refine: SVIConfig | None = None
) -> torch.Tensor:
    """log p(x) ≈ logsumexp_i [log p(x|z_i) + log p(z_i) - log q(z_i|x)] - log k, z_i ~ q(z|x); [B].

    With `refine`, q is the encoder's posterior refined by `svi_posterior`. Decoder passes hold at most
    LOGIT_BUDGET floats (`model.pass_floats`: logits of text, activations of image decoders): documents x
    samples per pass are chosen to fit. `tokens` may be images ([B, C, H, W], `lengths` None).
    """
    if not model.has_latent:
        return model.log_likelihood(tokens, None)[:, 0]
    rows = rows_within_budget(1, model.pass_floats(tokens))
    if tokens.shape[0] > rows:  # even one sample per document would not fit: split the documents
        parts = [
            iw_log_marginal(model, tokens[i : i + rows], _rows(lengths, i, rows), k, chunk, refine)
            for i in range(0, tokens.shape[0], rows)
        ]
        return torch.cat(parts)
    posterior = model.encode(tokens, lengths)
    if refine is not None:
        posterior = svi_posterior(model, tokens, posterior, refine)
    step = max(1, min(chunk, rows // tokens.shape[0]))
    log_w = []
    for start in range(0, k, step):
        z = posterior.rsample(min(step, k - start))
        log_w.append(model.log_likelihood(tokens, z) + model.prior.log_prob(z) - posterior.log_prob(z))
    return torch.logsumexp(torch.cat(log_w, dim=1), dim=1) - math.log(k)


def iw_nll(
    model, loader: DataLoader, k: int = 500, chunk: int = 500, seed: int = 0, refine: SVIConfig | None = None
) -> dict[str, float]:
    """Importance-weighted NLL (Burda et al. 2016) with k posterior samples, evaluated in chunks.

    Returns `iw_nll` and `iw_ppl`; with `refine`, the proposal is the SVI-refined posterior and the
    keys are `iw_nll_svi` and `iw_ppl_svi` instead (both with `iw_samples`).
    """
    model.eval()
    device = model_device(model)
    total = 0.0
    n_docs = n_tokens = 0
    # test-time SVI differentiates with respect to the posterior: no_grad, not inference mode
    with seeded(seed, device), torch.no_grad() if refine is not None else torch.inference_mode():
        for batch in loader:
            batch = batch.to(device)
            total -= iw_log_marginal(model, batch.data, batch.lengths, k, chunk, refine).sum().item()
            n_docs += len(batch)
            n_tokens += batch.n_predicted
    suffix = "" if refine is None else "_svi"
    ppl = MODALITIES[batch.modality].perplexity_of(f"iw_ppl{suffix}", total, n_tokens)
    return {f"iw_nll{suffix}": total / n_docs, **ppl, "iw_samples": k}
