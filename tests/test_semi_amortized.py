"""The SA-VAE update rule (Kim et al. 2018): trains both networks; exact and finite-difference modes agree."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import assert_rule_trains_both_networks, savae_hvp_mismatch

from textvae.config import ElboConfig, ModelConfig, OptimConfig, SemiAmortizedUpdateConfig, SVIConfig
from textvae.data.batching import RandomBatches, TokenizedSplit
from textvae.errors import TextVAEError
from textvae.models.model import build_model
from textvae.objectives import build_objective
from textvae.training.semi_amortized import SemiAmortizedUpdate
from textvae.training.updates import UpdateContext, build_update

pytestmark = pytest.mark.usefixtures("torch_single_thread")

DOCS = [[4 + (i * 7 + j) % 20 for j in range(2 + i % 6)] for i in range(40)]
SMALL = dict(embed_dim=8, hidden_dim=16, latent_dim=3, dropout_in=0.2, dropout_out=0.2, init_scale=0.3)


def context(model, svi: SVIConfig, objective=None) -> UpdateContext:
    return UpdateContext(
        model=model,
        objective=objective or build_objective(ElboConfig(), 5, 1),
        optim=OptimConfig(lr=0.5),
        cfg=SemiAmortizedUpdateConfig(type="savae", svi=svi),
        lr=0.5,
        sample_batch=RandomBatches(TokenizedSplit(DOCS), 8, seed=0),
    )


def tiny_model(**overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(**{**SMALL, **overrides}), 30)


@pytest.mark.parametrize("mode", ["exact", "finite_difference"])
def test_steps_train_encoder_and_decoder(mode):
    model = tiny_model()
    rule = build_update(context(model, SVIConfig(steps=3, lr=0.5, hvp=mode)))
    assert isinstance(rule, SemiAmortizedUpdate)
    terms = assert_rule_trains_both_networks(rule, model, steps=3)
    assert terms["n"] == 8
    assert math.isfinite(terms["svi_loss_start"]) and math.isfinite(terms["svi_loss_end"])


@pytest.mark.parametrize(("scheme", "fd_eps"), [("forward", 1e-6), ("central", 1e-3)])
def test_exact_and_finite_difference_updates_agree(scheme, fd_eps):
    """One update from the same weights and seed; float64, where finite differences are accurate to ~1e-6."""
    error = savae_hvp_mismatch(
        lambda model, svi: build_update(context(model, svi)),
        lambda: tiny_model().double(),
        steps=4,
        lr=0.5,
        clip=1.0,
        fd_scheme=scheme,
        fd_eps=fd_eps,
    )
    assert error < 1e-3


def test_needs_per_document_losses_and_a_latent():
    class BatchOnly:
        def __call__(self, model, batch, step):
            raise AssertionError("not called")

    with pytest.raises(TypeError, match="per-document"):
        SemiAmortizedUpdate(context(tiny_model(), SVIConfig(), objective=BatchOnly()))
    with pytest.raises(ValueError, match="no latent"):
        SemiAmortizedUpdate(context(tiny_model(type="lstm_lm"), SVIConfig()))


def test_missing_double_backward_names_the_fix(monkeypatch):
    """cuDNN LSTMs have no double backward: the exact mode must say to switch to finite differences."""
    import textvae.training.semi_amortized as semi_amortized

    real = semi_amortized.refine_differentiable

    def without_double_backward(*args, **kwargs):
        trace = real(*args, **kwargs)

        def pullback(d_lam):
            raise RuntimeError("derivative for _cudnn_rnn_backward is not implemented")

        trace.pullback = pullback
        return trace

    monkeypatch.setattr(semi_amortized, "refine_differentiable", without_double_backward)
    rule = build_update(context(tiny_model(), SVIConfig(steps=2, hvp="exact")))
    with pytest.raises(TextVAEError, match="set update.svi.hvp=finite_difference"):
        rule(rule.sample_batch(), step=0)
