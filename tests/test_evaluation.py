"""Evaluation estimators checked against exact values (quadrature over a 1-d latent) and known cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import tiny_lstm_vae
from hypothesis import given, settings
from hypothesis import strategies as st

from textvae.config import EvalConfig, ModelConfig
from textvae.data.batching import TokenizedSplit, collate, make_loader
from textvae.evaluation import evaluate
from textvae.evaluation.latent import active_units, batch_mutual_information, mutual_information
from textvae.evaluation.likelihood import elbo_nll, iw_log_marginal, iw_nll
from textvae.models.model import build_model
from textvae.models.posteriors import DiagonalGaussian

VOCAB = 7  # 4 specials + 3 words
SENTENCES = [[4], [5, 6], [4, 4, 5], [6, 5, 4, 6], [5]]


def tiny_vae(seed: int = 0, latent_dim: int = 1) -> torch.nn.Module:
    """An LSTM VAE small enough that log p(x) can be integrated numerically over z."""
    return tiny_lstm_vae(VOCAB, seed, latent_dim=latent_dim)


def exact_log_marginal(model, tokens: torch.Tensor, grid: int = 4001, bound: float = 9.0) -> torch.Tensor:
    """log p(x) = log ∫ p(x|z) N(z; 0, 1) dz by the trapezoid rule on [-bound, bound] (1-d latent)."""
    z = torch.linspace(-bound, bound, grid, dtype=torch.float64)
    weights = torch.full((grid,), (2 * bound) / (grid - 1), dtype=torch.float64)
    weights[[0, -1]] /= 2
    with torch.inference_mode():
        zz = z.float().view(1, grid, 1).expand(tokens.shape[0], -1, -1)
        log_lik = model.log_likelihood(tokens, zz).double()  # [B, G]
    log_prior = -0.5 * (z**2 + math.log(2 * math.pi))
    return torch.logsumexp(log_lik + log_prior + weights.log(), dim=1)


@pytest.fixture(scope="module")
def model_and_batch():
    model = tiny_vae()
    batch = collate(list(enumerate(SENTENCES)))
    return model, batch, exact_log_marginal(model, batch.tokens)


def test_quadrature_is_converged(model_and_batch):
    model, batch, exact = model_and_batch
    coarse = exact_log_marginal(model, batch.tokens, grid=2001, bound=8.0)
    assert torch.allclose(coarse, exact, atol=1e-6)


def test_latent_matters_in_tiny_model(model_and_batch):
    """The check is only meaningful if p(x|z) really varies with z."""
    model, batch, _ = model_and_batch
    with torch.inference_mode():
        ll = model.log_likelihood(batch.tokens, torch.tensor([-2.0, 2.0]).view(1, 2, 1).expand(len(batch), -1, -1))
    assert (ll[:, 0] - ll[:, 1]).abs().max() > 0.5


def test_iw_nll_converges_to_exact_log_likelihood(model_and_batch):
    """IW bound with k = 20,000 samples is within 0.01 nats of log p(x) from quadrature, per sentence."""
    model, batch, exact = model_and_batch
    torch.manual_seed(1)
    with torch.inference_mode():
        estimate = iw_log_marginal(model, batch.tokens, batch.lengths, k=20_000, chunk=5000).double()
    assert torch.all((estimate - exact).abs() < 0.01), (estimate, exact)


def test_iw_bound_tightens_with_k_and_stays_below_exact(model_and_batch):
    """E[log p̂_k] increases with k towards log p(x): averaged over 200 repeats the ordering holds."""
    model, batch, exact = model_and_batch
    torch.manual_seed(2)
    means = {}
    with torch.inference_mode():
        for k in (1, 10, 1000):
            runs = torch.stack([iw_log_marginal(model, batch.tokens, batch.lengths, k, 1000) for _ in range(200)])
            means[k] = runs.double().mean(0)
    assert torch.all(means[1] < means[1000])
    assert means[1].sum() < means[10].sum() < means[1000].sum()
    assert torch.all(means[1000] <= exact + 1e-3)
    assert (exact - means[1]).sum() > 0.1  # the gap the bound closes is real


def test_eval_loaders_agree_with_exact_and_elbo_is_looser(model_and_batch):
    model, batch, exact = model_and_batch
    split = TokenizedSplit(SENTENCES)
    loader = make_loader(split, batch_size=2, shuffle=False)
    iw = iw_nll(model, loader, k=5000, chunk=2500, seed=3)
    elbo = elbo_nll(model, loader, n_samples=2000, seed=3)
    exact_nll = -exact.mean().item()
    assert abs(iw["iw_nll"] - exact_nll) < 0.01
    assert elbo["elbo_nll"] > iw["iw_nll"] + 0.01
    assert elbo["n_sentences"] == len(SENTENCES)
    assert elbo["n_tokens"] == sum(len(s) + 1 for s in SENTENCES)  # </s> counted, <s> not
    assert elbo["ppl"] == pytest.approx(math.exp(elbo["elbo_nll"] * len(SENTENCES) / elbo["n_tokens"]))


def test_iw_below_elbo_for_k_above_one():
    """On a batch of random documents, the k=50 IW-NLL is below the one-sample ELBO-NLL (same model)."""
    torch.manual_seed(4)
    model = tiny_vae(seed=4, latent_dim=3)
    rng = np.random.default_rng(0)
    docs = [rng.integers(4, VOCAB, size=rng.integers(1, 8)).tolist() for _ in range(64)]
    loader = make_loader(TokenizedSplit(docs), batch_size=16, shuffle=False)
    assert iw_nll(model, loader, k=50, seed=0)["iw_nll"] < elbo_nll(model, loader, seed=0)["elbo_nll"]


@settings(max_examples=50, deadline=None, derandomize=True)
@given(
    st.lists(st.floats(-5, 5), min_size=2, max_size=6),
    st.lists(st.floats(-6, 3), min_size=2, max_size=6),
)
def test_kl_is_nonnegative_and_matches_monte_carlo(means, logvars):
    dim = min(len(means), len(logvars))
    q = DiagonalGaussian(
        torch.tensor([means[:dim]], dtype=torch.float64), torch.tensor([logvars[:dim]], dtype=torch.float64)
    )
    kl = q.kl()
    assert torch.all(kl >= 0)
    torch.manual_seed(0)
    z = q.rsample(200_000)
    log_p = -0.5 * (z**2 + math.log(2 * math.pi)).sum(-1)
    log_ratio = q.log_prob(z) - log_p
    stderr = log_ratio.std().item() / math.sqrt(log_ratio.numel())
    assert abs(log_ratio.mean().item() - kl.sum().item()) < 5 * stderr + 1e-6


def test_kl_zero_only_at_prior():
    q = DiagonalGaussian(torch.zeros(1, 3), torch.zeros(1, 3))
    assert torch.all(q.kl() == 0)


def test_mutual_information_zero_when_posterior_is_prior():
    torch.manual_seed(0)
    q = DiagonalGaussian(torch.zeros(500, 4), torch.zeros(500, 4))
    assert abs(batch_mutual_information(q)) < 0.25  # MC noise: std ≈ 0.06 here; the cap log(500) is 6.2


def test_mutual_information_reaches_log_batch_for_separated_codes():
    """Far-apart, narrow posteriors: each z identifies its x, so MI = log(batch size) (the estimator's cap)."""
    torch.manual_seed(0)
    means = torch.randn(1000, 2) * 100
    q = DiagonalGaussian(means, torch.full((1000, 2), -8.0))
    assert batch_mutual_information(q) == pytest.approx(math.log(1000), abs=0.15)  # MC std ≈ 0.03


def test_active_units_counts_dimensions_with_varying_means():
    class FixedEncoder(torch.nn.Module):
        """Posterior mean: dim 0 varies with the document, dim 1 barely, dim 2 not at all."""

        has_latent = True
        stochastic = False  # no KL needed for AU

        def __init__(self):
            super().__init__()
            self.dummy = torch.nn.Parameter(torch.zeros(1))

        def encode(self, tokens, lengths):
            x = lengths.float()
            mean = torch.stack([x, 0.01 * x, torch.zeros_like(x)], dim=1)
            return DiagonalGaussian(mean, torch.zeros_like(mean))

    docs = [[4] * n for n in range(1, 11)]  # lengths 1..10: variance of dim 0 = 9.17
    au, variances = active_units(FixedEncoder(), make_loader(TokenizedSplit(docs), 3, shuffle=False))
    assert au == 1
    assert variances[0].item() == pytest.approx(np.var(np.arange(1, 11), ddof=1), rel=1e-5)


def test_mutual_information_over_loader_uses_batches():
    model = tiny_vae(latent_dim=2)
    loader = make_loader(TokenizedSplit(SENTENCES * 4), batch_size=5, shuffle=False, bucket=False)
    mi = mutual_information(model, loader, seed=0)
    assert -0.5 < mi < math.log(5) + 1e-6


def test_evaluate_reports_protocol_keys():
    model = tiny_vae(latent_dim=2)
    metrics = evaluate(model, TokenizedSplit(SENTENCES), 2, EvalConfig(iw_samples=10, mi_batch_size=5))
    for key in ("elbo_nll", "iw_nll", "ppl", "iw_ppl", "kl", "mi", "au", "iw_samples", "n_sentences", "n_tokens"):
        assert key in metrics
    assert metrics["iw_samples"] == 10 and metrics["mi_batch_size"] == 5
    assert len(metrics["kl_per_dim"]) == 2
    assert sum(metrics["kl_per_dim"]) == pytest.approx(metrics["kl"], rel=1e-4)


def test_language_model_metrics_are_exact_and_latent_free():
    torch.manual_seed(0)
    lm = build_model(ModelConfig(type="lstm_lm", embed_dim=4, hidden_dim=6, dropout_in=0, dropout_out=0), VOCAB)
    metrics = evaluate(lm.eval(), TokenizedSplit(SENTENCES), 2, EvalConfig(iw_samples=10))
    assert metrics["iw_nll"] == pytest.approx(metrics["elbo_nll"], rel=1e-6)
    assert metrics["kl"] == 0 and metrics["mi"] == 0 and metrics["au"] == 0


def test_iw_nll_splits_documents_when_one_sample_exceeds_the_logit_budget(monkeypatch, model_and_batch):
    """With a budget smaller than one sample of the batch, documents are split; the result is unchanged."""
    import textvae.evaluation.likelihood as likelihood

    model, batch, exact = model_and_batch
    monkeypatch.setattr(likelihood, "LOGIT_BUDGET", batch.tokens.shape[1] * VOCAB * 2)  # 2 rows per pass
    torch.manual_seed(5)
    with torch.inference_mode():
        estimate = iw_log_marginal(model, batch.tokens, batch.lengths, k=20_000, chunk=5000).double()
    assert estimate.shape == exact.shape
    assert torch.all((estimate - exact).abs() < 0.01)
