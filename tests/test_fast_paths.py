"""The fast paths give the results of the straightforward ones: the fused output layer + cross-entropy,
bf16 autocast training, batched IW-NLL in inference mode, and MI/AU/KL from one encoder pass."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import random_sentences
from torch import nn

import textvae.models.token_loss as token_loss
from textvae.config import ElboConfig, EvalConfig, JointUpdateConfig, ModelConfig, OptimConfig
from textvae.data.batching import TokenizedSplit, collate, make_loader
from textvae.evaluation import latent_metrics
from textvae.evaluation.latent import active_units, kl_per_dim, mutual_information
from textvae.evaluation.likelihood import iw_nll
from textvae.models.model import build_model
from textvae.objectives import build_objective
from textvae.training.updates import UpdateContext, build_update

VOCAB = 40


def corpus(n: int, seed: int = 0) -> TokenizedSplit:
    """n documents of 3-12 word ids (4..VOCAB-1)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 13, (n,), generator=g)
    return TokenizedSplit([torch.randint(4, VOCAB, (int(k),), generator=g).tolist() for k in lengths])


def small_vae(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    cfg = dict(latent_dim=4, embed_dim=16, hidden_dim=32, init_scale=0.3, dropout_in=0.0, dropout_out=0.0)
    return build_model(ModelConfig(**{**cfg, **overrides}), VOCAB)


# -- the fused output layer + cross-entropy -------------------------------------------------------


@pytest.fixture
def scoring_case():
    torch.manual_seed(0)
    layer = nn.Linear(12, 30).double()
    features = torch.randn(3, 7, 12, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(1, 30, (3, 7))
    targets[0, 4:] = 0  # padding
    targets[2, 2:] = 0
    weights = torch.randn(3, 7, dtype=torch.float64)  # a loss that weights every position differently
    return layer, features, targets, weights


def _values_and_grads(loss, layer, features):
    grads = torch.autograd.grad(loss, [features, layer.weight, layer.bias])
    return [loss.detach(), *grads]


@pytest.mark.parametrize("chunk", [2**21, 45])  # one chunk; a chunk of one row (and a ragged last chunk)
def test_fused_loss_equals_cross_entropy_of_the_logits(scoring_case, chunk, monkeypatch):
    layer, features, targets, weights = scoring_case
    monkeypatch.setattr(token_loss, "CHUNK_LOGITS", chunk)
    plain = F.cross_entropy(layer(features).flatten(0, 1), targets.flatten(), ignore_index=0, reduction="none")
    fused = token_loss.linear_cross_entropy(features, layer, targets, ignore_index=0)
    assert fused.dtype == torch.float64 and fused.shape == targets.shape
    assert torch.equal(fused == 0, targets == 0)  # padding contributes nothing
    expected = _values_and_grads((plain.view(3, 7) * weights).sum(), layer, features)
    got = _values_and_grads((fused * weights).sum(), layer, features)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_fused_loss_under_bf16_autocast_is_close_to_fp32(scoring_case):
    layer, features, targets, weights = scoring_case
    layer, features, weights = layer.float(), features.detach().float().requires_grad_(), weights.float()
    fp32 = _values_and_grads(
        (token_loss.linear_cross_entropy(features, layer, targets, 0) * weights).sum(), layer, features
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        nll = token_loss.linear_cross_entropy(features, layer, targets, 0)
    assert nll.dtype == torch.float32  # the loss itself is never bf16
    bf16 = _values_and_grads((nll * weights).sum(), layer, features)
    for a, b in zip(bf16, fp32):  # bf16 keeps 8 bits of mantissa: ~0.4% per product
        torch.testing.assert_close(a, b, rtol=0.03, atol=0.03 * b.abs().max().item())


def test_fused_loss_refuses_double_backward_and_the_plain_path_has_it(scoring_case):
    model = small_vae().double()
    model.decoder.fused_loss = True
    batch = collate(list(enumerate(corpus(4).ids)))
    z = torch.randn(4, 1, 4, dtype=torch.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match="twice_differentiable"):  # not a silently missing second derivative
        torch.autograd.grad(model.log_likelihood(batch.tokens, z).sum(), z, create_graph=True)
    with model.decoder.twice_differentiable():
        (grad,) = torch.autograd.grad(model.log_likelihood(batch.tokens, z).sum(), z, create_graph=True)
        (second,) = torch.autograd.grad(grad.sum(), z)
    assert second.abs().sum() > 0
    assert model.decoder.fused_loss  # restored


def test_model_scores_the_same_fused_or_not():
    model = small_vae().double().eval()
    model.decoder.fused_loss = True
    batch = collate(list(enumerate(corpus(6).ids)))
    z = torch.randn(6, 3, 4, dtype=torch.float64)
    fused = model.log_likelihood(batch.tokens, z)
    with model.decoder.twice_differentiable():
        plain = model.log_likelihood(batch.tokens, z)
    torch.testing.assert_close(fused, plain, rtol=1e-12, atol=1e-10)


# -- bf16 autocast training ------------------------------------------------------------------------


def train_losses(precision: str, steps: int = 40) -> list[float]:
    model = small_vae(seed=1).set_precision(precision)
    split = corpus(64, seed=2)
    rule = build_update(
        UpdateContext(
            model=model,
            objective=build_objective(ElboConfig(), 8, 5),
            optim=OptimConfig(type="adam", lr=3e-3, clip=5.0),
            cfg=JointUpdateConfig(),
            lr=3e-3,
            sample_batch=lambda: None,
        )
    )
    torch.manual_seed(3)
    losses = []
    for epoch in range(steps // 8):
        for batch in make_loader(split, 8, shuffle=True, seed=epoch):
            losses.append(rule(batch, len(losses))["loss"] / len(batch))
    return losses


def test_bf16_training_follows_fp32_training():
    """Same seed, same batches, same noise: bf16 autocast and fp32 losses agree within 1.5% at every one of 40
    Adam steps (the loss falls by ~25% over them), so bf16 trains the same model, not just a similar one."""
    fp32, bf16 = train_losses("fp32"), train_losses("bf16")
    assert fp32[-1] < 0.8 * fp32[0]  # it learned something: the comparison is not of two flat lines
    for a, b in zip(fp32, bf16):
        assert b == pytest.approx(a, rel=0.015)
    assert sum(bf16[-8:]) == pytest.approx(sum(fp32[-8:]), rel=0.01)


# -- importance-weighted NLL -----------------------------------------------------------------------


def straightforward_iw_log_marginal(model, tokens, lengths, k: int, chunk: int = 100) -> float:
    """Research-code IW: one document, `chunk` samples per decoder pass, plain logits + cross-entropy."""
    with torch.no_grad(), model.decoder.twice_differentiable():
        posterior = model.encode(tokens, lengths)
        log_w = []
        for start in range(0, k, chunk):
            z = posterior.rsample(min(chunk, k - start))
            log_w.append(model.log_likelihood(tokens, z) + model.prior.log_prob(z) - posterior.log_prob(z))
        return (torch.logsumexp(torch.cat(log_w, 1), 1) - math.log(k)).item()


@pytest.mark.parametrize("fused", [False, True])
def test_fast_iw_nll_equals_the_straightforward_one_within_monte_carlo_error(fused):
    model = small_vae(seed=4, init_scale=0.5).eval()
    model.decoder.fused_loss = fused
    split = corpus(12, seed=5)
    k = 300
    fast = iw_nll(model, make_loader(split, 6, shuffle=False), k=k, chunk=k, seed=0)["iw_nll"]
    per_document = []  # several seeds of the straightforward estimate give its Monte Carlo spread
    for seed in range(4):
        torch.manual_seed(seed)
        per_document.append(
            [
                -straightforward_iw_log_marginal(model, b.tokens, b.lengths, k)
                for b in (collate([(i, ids)]) for i, ids in enumerate(split.ids))
            ]
        )
    means = torch.tensor(per_document).mean(1)  # the mean NLL of each seed
    spread = means.std().item()
    assert spread > 0
    assert abs(fast - means.mean().item()) < 4 * spread + 1e-3


def test_bf16_iw_nll_is_within_a_hundredth_of_a_nat_per_token_of_fp32():
    model = small_vae(seed=4, init_scale=0.5).eval()
    loader = make_loader(corpus(12, seed=5), 6, shuffle=False)
    fp32 = iw_nll(model, loader, k=50, seed=0)
    bf16 = iw_nll(model.set_precision("bf16"), loader, k=50, seed=0)
    tokens = sum(len(ids) + 1 for ids in corpus(12, seed=5).ids)
    assert abs(bf16["iw_nll"] - fp32["iw_nll"]) * 12 / tokens < 0.01


# -- MI, AU and KL per dimension from one encoder pass ---------------------------------------------


def test_latent_metrics_from_one_pass_equal_the_separate_estimators():
    model = small_vae(seed=6, init_scale=1.0).eval()
    split = corpus(30, seed=7)
    cfg = EvalConfig(mi_batch_size=10, seed=3)
    metrics = latent_metrics(model, split, 7, cfg)  # length-sorted batches of 7; MI over file-order tens
    file_order = make_loader(split, 10, shuffle=False, bucket=False)
    batches = list(file_order)  # iterating a DataLoader draws a seed from the random state: collate first
    assert metrics["mi"] == pytest.approx(mutual_information(model, batches, seed=3), abs=1e-5)
    au, variances = active_units(model, make_loader(split, 5, shuffle=False), cfg.au_threshold)
    assert metrics["au"] == au
    assert metrics["au_variances"] == pytest.approx(variances.tolist(), abs=1e-5)
    assert metrics["kl_per_dim"] == pytest.approx(kl_per_dim(model, file_order).tolist(), abs=1e-5)


def test_sentences_are_scored_on_real_lengths_only():
    """Padding never reaches the fused loss: a document's log-likelihood does not depend on its batch."""
    model = small_vae(seed=8).double().eval()
    model.decoder.fused_loss = True
    docs = random_sentences(5, seed=1)
    ids = [[4 + sum(map(ord, w)) % (VOCAB - 4) for w in d.split()] for d in docs]
    z = torch.randn(len(ids), 1, 4, dtype=torch.float64)
    together = model.log_likelihood(collate(list(enumerate(ids))).tokens, z)[:, 0]
    alone = [model.log_likelihood(collate([(0, x)]).tokens, z[i : i + 1])[0, 0] for i, x in enumerate(ids)]
    torch.testing.assert_close(together, torch.stack(alone), rtol=1e-10, atol=1e-9)


def test_fast_dropout_keeps_the_distribution_of_nn_dropout():
    from textvae.models.base import Dropout

    drop = Dropout(0.3).train()
    torch.manual_seed(0)
    x = torch.ones(200_000)
    y = drop(x)
    kept = (y != 0).float().mean().item()
    assert kept == pytest.approx(0.7, abs=0.005)  # binomial std ≈ 0.001
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / 0.7))  # inverted dropout: E[y] = x
    assert torch.equal(drop.eval()(x), x)
    assert torch.equal(Dropout(1.0).train()(x), torch.zeros_like(x))
    g = torch.ones(10, requires_grad=True)
    Dropout(0.5).train()(g).sum().backward()
    assert set(g.grad.tolist()) <= {0.0, 2.0}


def test_the_model_fuses_the_loss_for_bf16_or_compiled_runs_only():
    model = small_vae()
    assert not model.decoder.fused_loss  # eager fp32: the plain logits path is the faster one
    assert model.set_precision("bf16").decoder.fused_loss
    assert not model.set_precision("fp32").decoder.fused_loss
    assert model.set_compiled(True).decoder.fused_loss


@pytest.mark.slow
def test_compiled_softmax_kernels_give_the_eager_results(scoring_case):
    """torch.compile of the per-chunk kernels (train.compile): values and gradients as in eager mode."""
    layer, features, targets, weights = scoring_case
    layer, features, weights = layer.float(), features.detach().float().requires_grad_(), weights.float()
    results = []
    for compiled in (False, True):
        nll = token_loss.linear_cross_entropy(features, layer, targets, 0, compiled=compiled)
        results.append(_values_and_grads((nll * weights).sum(), layer, features))
        with torch.inference_mode():
            results[-1].append(token_loss.linear_cross_entropy(features, layer, targets, 0, compiled=compiled))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
