"""KL schedules and the ELBO's β, KL weight and free bits."""

from __future__ import annotations

import pytest
import torch

from textvae.config import ElboConfig, ScheduleConfig
from textvae.data.batching import collate
from textvae.objectives import build_objective
from textvae.objectives.schedules import make_schedule


def test_constant_schedule():
    weight = make_schedule(ScheduleConfig(type="constant", value=0.3), steps_per_epoch=10, epochs=5)
    assert [weight(s) for s in (0, 7, 1000)] == [0.3, 0.3, 0.3]


def test_linear_warmup_is_per_iteration_then_flat():
    """He et al.: 0.1 -> 1.0 over 10 epochs of 100 steps, increased every step."""
    weight = make_schedule(ScheduleConfig(type="linear", start=0.1, end=1.0, warmup_epochs=10), 100, 100)
    assert weight(0) == pytest.approx(0.1)
    assert weight(500) == pytest.approx(0.55)
    assert weight(1) > weight(0)
    assert weight(1000) == pytest.approx(1.0) and weight(5000) == pytest.approx(1.0)


def test_cyclical_schedule_rises_holds_and_restarts():
    """Fu et al.: 4 cycles over 8 epochs of 10 steps; each rises over its first half, then holds."""
    weight = make_schedule(ScheduleConfig(type="cyclical", start=0.0, end=1.0, cycles=4, ratio=0.5), 10, 8)
    assert weight(0) == 0.0
    assert weight(5) == pytest.approx(0.5)
    assert weight(10) == pytest.approx(1.0) and weight(19) == pytest.approx(1.0)
    assert weight(20) == 0.0  # second cycle starts again
    assert weight(65) == pytest.approx(0.5)


class FixedPosterior:
    def __init__(self, kl: torch.Tensor) -> None:
        self._kl = kl

    def rsample(self, n: int = 1) -> torch.Tensor:
        return torch.zeros(self._kl.shape[0], n, self._kl.shape[1])

    def kl(self) -> torch.Tensor:
        return self._kl


class FixedModel(torch.nn.Module):
    """Returns preset log-likelihoods and per-dimension KLs (with gradients) for any batch."""

    has_latent = True

    def __init__(self, log_lik: torch.Tensor, kl: torch.Tensor) -> None:
        super().__init__()
        self.log_lik = torch.nn.Parameter(log_lik)
        self.kl_values = torch.nn.Parameter(kl)

    def encode(self, tokens, lengths) -> FixedPosterior:
        return FixedPosterior(self.kl_values)

    def kl(self, posterior, z=None) -> torch.Tensor:
        return posterior.kl().sum(-1)

    def log_likelihood(self, tokens, z) -> torch.Tensor:
        return self.log_lik


def _batch():
    return collate([(0, [4, 5]), (1, [6])])


def test_elbo_weights_kl_by_beta_times_schedule():
    model = FixedModel(torch.tensor([[-10.0], [-20.0]]), torch.tensor([[1.0, 2.0], [3.0, 0.0]]))
    cfg = ElboConfig(beta=0.4, kl_schedule=ScheduleConfig(type="linear", start=0.0, end=1.0, warmup_epochs=1))
    objective = build_objective(cfg, steps_per_epoch=10, epochs=1)
    out = objective(model, _batch(), step=5)  # schedule weight 0.5
    assert out.terms["kl_weight"] == pytest.approx(0.2)
    assert out.loss.item() == pytest.approx(15.0 + 0.2 * 3.0)  # mean rec + w * mean total KL
    assert out.terms["rec"] == pytest.approx(30.0) and out.terms["kl"] == pytest.approx(6.0)


def test_free_bits_stops_gradient_below_target():
    """Dimension 0 has batch-mean KL 2.0 (> 1.0 target), dimension 1 has 0.5 (< target): no gradient."""
    model = FixedModel(torch.tensor([[-10.0], [-20.0]]), torch.tensor([[1.0, 0.2], [3.0, 0.8]]))
    objective = build_objective(ElboConfig(free_bits=1.0), steps_per_epoch=10, epochs=1)
    out = objective(model, _batch(), step=0)
    assert out.loss.item() == pytest.approx(15.0 + 2.0 + 1.0)
    out.loss.backward()
    assert torch.all(model.kl_values.grad[:, 0] > 0)
    assert torch.all(model.kl_values.grad[:, 1] == 0)


def test_language_model_loss_is_reconstruction_only():
    class LM(torch.nn.Module):
        has_latent = False

        def log_likelihood(self, tokens, z):
            assert z is None
            return torch.tensor([[-4.0], [-6.0]])

    out = build_objective(ElboConfig(), 10, 1)(LM(), _batch(), step=0)
    assert out.loss.item() == pytest.approx(5.0) and out.terms["kl"] == 0.0


def test_bag_of_words_nll_counts_every_word_occurrence_and_no_specials():
    from textvae.data.tokenizers import BOS, EOS, PAD
    from textvae.objectives.elbo import bag_of_words_nll

    logits = torch.randn(2, 9)
    tokens = torch.tensor([[BOS, 5, 6, 5, EOS], [BOS, 7, EOS, PAD, PAD]])
    log_p = logits.log_softmax(-1)
    expected = torch.stack([-(2 * log_p[0, 5] + log_p[0, 6]), -log_p[1, 7]])
    assert torch.allclose(bag_of_words_nll(logits, tokens), expected)


def test_bow_loss_trains_the_encoder_through_z_and_needs_the_head():
    from conftest import tiny_lstm_vae

    from textvae.config import Recipe

    model = tiny_lstm_vae(12, latent_dim=3, bow_head=True).train()
    batch = collate([(0, [5, 6, 7]), (1, [8, 9])])
    plain = build_objective(ElboConfig(), steps_per_epoch=1, epochs=1)
    with_bow = build_objective(ElboConfig(bow_weight=2.0), steps_per_epoch=1, epochs=1)
    torch.manual_seed(0)
    base = plain(model, batch, step=0)
    torch.manual_seed(0)
    out = with_bow(model, batch, step=0)
    assert out.loss.item() == pytest.approx(base.loss.item() + 2.0 * out.terms["bow"], rel=1e-5)
    out.loss.backward()
    assert model.decoder.bow.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.encoder.parameters() if p.requires_grad)
    data = {"train": "a", "valid": "b"}
    with pytest.raises(ValueError, match="model.bow_head"):
        Recipe.model_validate({"data": data, "objective": {"type": "elbo", "bow_weight": 1.0}})
    with pytest.raises(ValueError, match="language model"):
        Recipe.model_validate({"data": data, "model": {"type": "lstm_lm", "bow_head": True}})
