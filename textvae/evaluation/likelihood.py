"""Likelihood metrics at β = 1: `elbo_nll` (reconstruction + KL) and `iw_nll` (importance-weighted bound).

Both are per-document means in nats; PPL = exp(total NLL / predicted tokens), `</s>` counted, `<s>` not.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import DataLoader

from textvae.evaluation.common import model_device, seeded

LOGIT_BUDGET = 2**26  # logits held at once (floats) when batching samples x documents


def _ppl(total_nll: float, n_tokens: int) -> float:
    return math.exp(min(total_nll / n_tokens, 700.0))


@torch.inference_mode()
def elbo_nll(model, loader: DataLoader, n_samples: int = 1, seed: int = 0) -> dict[str, float]:
    """-ELBO per document with the analytic KL, the reconstruction term estimated with `n_samples` z."""
    model.eval()
    device = model_device(model)
    rec_total = kl_total = 0.0
    n_docs = n_tokens = 0
    with seeded(seed, device):
        for batch in loader:
            batch = batch.to(device)
            out = model(batch.tokens, batch.lengths, n_samples=n_samples)
            rec_total -= out.log_likelihood.mean(1).sum().item()
            if out.kl is not None:
                kl_total += out.kl.sum().item()
            n_docs += len(batch)
            n_tokens += batch.n_predicted
    total = rec_total + kl_total
    return {
        "elbo_nll": total / n_docs,
        "rec": rec_total / n_docs,
        "kl": kl_total / n_docs,
        "ppl": _ppl(total, n_tokens),
        "n_sentences": n_docs,
        "n_tokens": n_tokens,
    }


def _rows_within_budget(seq_len: int, vocab: int) -> int:
    return max(1, LOGIT_BUDGET // max(1, seq_len * vocab))


def iw_log_marginal(model, tokens: torch.Tensor, lengths: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """log p(x) ≈ logsumexp_i [log p(x|z_i) + log p(z_i) - log q(z_i|x)] - log k, z_i ~ q(z|x); [B].

    Decoder passes hold at most LOGIT_BUDGET logits: documents x samples per pass are chosen to fit.
    """
    if not model.has_latent:
        return model.log_likelihood(tokens, None)[:, 0]
    rows = _rows_within_budget(tokens.shape[1], model.config.vocab_size)
    if tokens.shape[0] > rows:  # even one sample per document would not fit: split the documents
        parts = [iw_log_marginal(model, tokens[i : i + rows], lengths[i : i + rows], k, chunk)
                 for i in range(0, tokens.shape[0], rows)]
        return torch.cat(parts)
    posterior = model.encode(tokens, lengths)
    step = max(1, min(chunk, rows // tokens.shape[0]))
    log_w = []
    for start in range(0, k, step):
        z = posterior.rsample(min(step, k - start))
        log_w.append(model.log_likelihood(tokens, z) + model.prior.log_prob(z) - posterior.log_prob(z))
    return torch.logsumexp(torch.cat(log_w, dim=1), dim=1) - math.log(k)


@torch.inference_mode()
def iw_nll(model, loader: DataLoader, k: int = 500, chunk: int = 500, seed: int = 0) -> dict[str, float]:
    """Importance-weighted NLL (Burda et al. 2016) with k posterior samples, evaluated in chunks."""
    model.eval()
    device = model_device(model)
    total = 0.0
    n_docs = n_tokens = 0
    with seeded(seed, device):
        for batch in loader:
            batch = batch.to(device)
            total -= iw_log_marginal(model, batch.tokens, batch.lengths, k, chunk).sum().item()
            n_docs += len(batch)
            n_tokens += batch.n_predicted
    return {"iw_nll": total / n_docs, "iw_ppl": _ppl(total, n_tokens), "iw_samples": k}
