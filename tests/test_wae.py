"""WAE-MMD, InfoVAE and WAE-GAN objectives on tiny LSTM models."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_lstm_vae

from textvae.config import (
    AggressiveUpdateConfig,
    ElboConfig,
    InfoVAEConfig,
    JointUpdateConfig,
    ModelConfig,
    OptimConfig,
    SemiAmortizedUpdateConfig,
    SVIConfig,
    WAEGANConfig,
    WAEMMDConfig,
)
from textvae.data.batching import RandomBatches, TokenizedSplit, collate
from textvae.models.model import build_model
from textvae.objectives import build_objective
from textvae.objectives import mmd as _mmd  # noqa: F401  (until objectives/__init__ imports these)
from textvae.objectives import wae as _wae  # noqa: F401
from textvae.objectives import wae_gan as _wae_gan  # noqa: F401
from textvae.objectives.mmd import mmd_unbiased
from textvae.objectives.wae import WAEMMD, InfoVAE
from textvae.objectives.wae_gan import WAEGAN
from textvae.training.updates import UpdateContext, build_update

VOCAB = 30
DOCS = [[4 + (i * 7 + j) % 20 for j in range(2 + i % 6)] for i in range(40)]
SMALL = dict(embed_dim=8, hidden_dim=16, latent_dim=3, dropout_in=0.0, dropout_out=0.0)


@pytest.fixture(autouse=True)
def _one_thread(torch_single_thread):
    """Tiny models: one torch thread."""


def batch(n: int = 6):
    return collate([(i, DOCS[i]) for i in range(n)])


def tiny(**overrides):
    return tiny_lstm_vae(VOCAB, latent_dim=2, **overrides)


def wae_mmd(**cfg) -> WAEMMD:
    return build_objective(WAEMMDConfig(type="wae_mmd", **cfg), 10, 1)


def wae_gan(**cfg) -> WAEGAN:
    return build_objective(WAEGANConfig(type="wae_gan", **cfg), 10, 1)


def infovae(**cfg) -> InfoVAE:
    return build_objective(InfoVAEConfig(type="infovae", **cfg), 10, 1)


def test_factories_and_selection_metrics():
    assert isinstance(wae_mmd(), WAEMMD) and wae_mmd().selection_metric == "rec"
    assert isinstance(wae_gan(), WAEGAN) and wae_gan().selection_metric == "rec"
    assert isinstance(infovae(), InfoVAE) and infovae().selection_metric == "elbo_nll"


def test_wae_mmd_loss_is_reconstruction_plus_weighted_terms():
    model, data = tiny(), batch()
    objective = wae_mmd(lambda_=5.0, kl_weight=0.3, logvar_penalty=0.2)
    torch.manual_seed(1)
    out = objective(model, data, step=0)
    t, n = out.terms, len(data)
    assert t["n"] == n and t["kl_weight"] == 0.0  # a WAE has no KL to the prior in its loss
    expected = t["rec"] / n + 0.3 * t["variance_kl"] + 0.2 * t["logvar_l1"] + 5.0 * t["mmd"]
    assert out.loss.item() == pytest.approx(expected)
    torch.manual_seed(1)  # the same draws, computed by hand
    posterior = model.encode(data.tokens, data.lengths)
    z = posterior.rsample(1)
    rec = -model.log_likelihood(data.tokens, z)[:, 0]
    mmd = mmd_unbiased(z[:, 0], model.prior.sample(n), objective.kernel)
    assert t["rec"] == pytest.approx(rec.sum().item())
    assert t["kl"] == pytest.approx(posterior.kl().sum().item())
    assert t["logvar_l1"] == pytest.approx(posterior.logvar.abs().sum(-1).mean().item())
    # Bahuleyan et al.: KL(N(μ, σ²) || N(μ, I)), which does not depend on μ
    variance = torch.distributions.Normal(posterior.mean, posterior.std)
    centred = torch.distributions.Normal(posterior.mean, torch.ones_like(posterior.std))
    by_torch = torch.distributions.kl_divergence(variance, centred).sum(-1).mean()
    assert t["variance_kl"] == pytest.approx(by_torch.item(), rel=1e-5)
    assert t["mmd"] == pytest.approx(mmd.item())


def test_lambda_zero_is_the_autoencoder_loss():
    model, data = tiny(posterior="deterministic"), batch()
    out = wae_mmd(lambda_=0.0)(model, data, step=0)
    mean = model.encode(data.tokens, data.lengths).mean
    assert out.loss.item() == pytest.approx(-model.log_likelihood(data.tokens, mean[:, None]).mean().item())


@pytest.mark.parametrize("prior", ["standard_normal", "mog"])
def test_infovae_with_alpha_0_and_lambda_1_is_the_elbo(prior):
    components = {"components": 3} if prior == "mog" else {}  # a key of the mixture's section only
    model, data = tiny(prior={"type": prior, **components}), batch()
    torch.manual_seed(2)
    info = infovae(alpha=0.0, lambda_=1.0)(model, data, step=0)
    torch.manual_seed(2)
    elbo = build_objective(ElboConfig(), 10, 1)(model, data, step=0)
    assert info.loss.item() == pytest.approx(elbo.loss.item(), rel=1e-6)
    assert info.terms["rec"] == pytest.approx(elbo.terms["rec"]) and info.terms["kl"] == pytest.approx(elbo.terms["kl"])


@pytest.mark.parametrize("alpha, lam", [(1.0, 10.0), (0.5, 3.0), (-1.0, 4.0)])
def test_infovae_weights(alpha, lam):
    out = infovae(alpha=alpha, lambda_=lam)(tiny(), batch(), step=0)
    t, n = out.terms, out.terms["n"]
    assert t["kl_weight"] == 1 - alpha
    assert out.loss.item() == pytest.approx(t["rec"] / n + (1 - alpha) * t["kl"] / n + (alpha + lam - 1) * t["mmd"])


@pytest.mark.parametrize("make", [wae_mmd, wae_gan], ids=["wae_mmd", "wae_gan"])
def test_deterministic_encoder_has_no_kl(make):
    model, data = tiny(posterior="deterministic").train(), batch()
    out = make()(model, data, step=0)
    assert out.terms["kl"] == 0.0 and "logvar_l1" not in out.terms
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.encoder.parameters())


def test_mmd_gradients_reach_a_mixture_prior():
    model, data = tiny(prior={"type": "mog", "components": 3}), batch()
    out = wae_mmd(lambda_=10.0)(model, data, step=0)
    out.loss.backward()
    assert model.prior.means.grad.abs().sum() > 0 and model.prior.logvars.grad.abs().sum() > 0
    assert model.prior.logits.grad.abs().sum() > 0  # the mixture weights learn too (weighted per-component MMD)


def test_a_single_document_batch_has_no_mmd_term():
    out = wae_mmd()(tiny(), batch(1), step=0)
    assert out.terms["mmd"] == 0.0 and out.loss.item() == pytest.approx(out.terms["rec"])


def test_example_losses_leave_out_the_batch_level_term():
    model, data = tiny(), batch()
    objective = wae_mmd(lambda_=5.0, kl_weight=0.3, logvar_penalty=0.2)
    posterior = model.encode(data.tokens, data.lengths)
    torch.manual_seed(3)
    per_doc = objective.example_losses(model, data, posterior, step=0)
    torch.manual_seed(3)
    rec = -model.log_likelihood(data.tokens, posterior.rsample(1))[:, 0]
    variance_kl = 0.5 * (posterior.logvar.exp() - posterior.logvar - 1).sum(-1)
    expected = rec + 0.3 * variance_kl + 0.2 * posterior.logvar.abs().sum(-1)
    assert per_doc.shape == (len(data),) and torch.allclose(per_doc, expected)


# -- WAE-GAN's discriminator ------------------------------------------------------------------


def test_discriminator_learns_to_separate_two_distributions():
    objective = wae_gan(discriminator={"hidden_dim": 32, "layers": 2, "lr": 1e-2})
    gen = torch.Generator().manual_seed(0)
    losses = [
        objective.discriminator_step(torch.randn(64, 2, generator=gen) + 3.0, torch.randn(64, 2, generator=gen))
        for _ in range(60)
    ]
    assert losses[0] > 0.5 and sum(losses[-10:]) / 10 < 0.15  # from chance (log 2) to well separated
    assert all(p.grad is None for p in objective.discriminator.parameters())  # no stale gradients kept


def _snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _changed(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(b, p) for b, p in zip(before, module.parameters()))


def test_discriminator_trains_only_in_training_mode_with_gradients():
    model, data = tiny(), batch()
    objective = wae_gan()
    out = objective(model.eval(), data, step=0)  # builds D, does not train it
    assert "disc_loss" not in out.terms and objective.discriminator is not None
    before = _snapshot(objective.discriminator)
    with torch.no_grad():
        objective(model.train(), data, step=0)
    assert not _changed(before, objective.discriminator)
    out = objective(model.train(), data, step=0)
    assert "disc_loss" in out.terms and _changed(before, objective.discriminator)


def test_discriminator_and_model_gradients_never_mix():
    model, data = tiny().train(), batch()
    objective = wae_gan(lambda_=2.0, kl_weight=0.1, logvar_penalty=0.05)
    out = objective(model, data, step=0)  # one discriminator step inside
    assert all(p.grad is None for p in model.parameters())  # D's step sent nothing into the model
    before = _snapshot(objective.discriminator)
    out.loss.backward()
    assert all(p.grad is None for p in objective.discriminator.parameters())  # the model loss never reaches D
    assert not _changed(before, objective.discriminator)
    assert all(p.grad is not None for p in model.encoder.parameters())
    t, n = out.terms, len(data)
    expected = t["rec"] / n + 0.1 * t["variance_kl"] + 0.05 * t["logvar_l1"] + 2.0 * t["adv"]
    assert out.loss.item() == pytest.approx(expected)


def test_adversarial_term_pushes_encoder_samples_towards_the_prior():
    """The encoder's gradient from -log σ(D(z)) raises D(z): one step on z alone increases the logits."""
    objective = wae_gan(discriminator={"hidden_dim": 16, "layers": 1, "lr": 1e-2})
    for _ in range(50):
        objective.discriminator_step(torch.randn(64, 2) + 2.0, torch.randn(64, 2))

    class Model:
        training = False
        prior = None

    z = (torch.randn(64, 2) + 2.0).requires_grad_()
    loss, _ = objective.divergence(Model(), z)
    loss.backward()
    moved = z - 0.5 * z.grad
    with torch.no_grad():
        assert objective.discriminator(moved).mean() > objective.discriminator(z).mean()


# -- with the update rules --------------------------------------------------------------------

OBJECTIVES = {
    "wae_mmd_deterministic": (WAEMMDConfig(type="wae_mmd"), "deterministic"),
    "wae_mmd_stochastic": (WAEMMDConfig(type="wae_mmd", kl_weight=0.1, logvar_penalty=0.1), "gaussian"),
    "infovae": (InfoVAEConfig(type="infovae", alpha=0.0, lambda_=100.0), "gaussian"),
    "wae_gan": (WAEGANConfig(type="wae_gan", discriminator={"hidden_dim": 16, "layers": 2}), "deterministic"),
}


def _context(objective_cfg, posterior: str, update_cfg, **model) -> UpdateContext:
    torch.manual_seed(0)
    return UpdateContext(
        model=build_model(ModelConfig(**SMALL, posterior=posterior, **model), VOCAB),
        objective=build_objective(objective_cfg, 5, 1),
        optim=OptimConfig(type="adam", lr=0.01),
        cfg=update_cfg,
        lr=0.01,
        sample_batch=RandomBatches(TokenizedSplit(DOCS), 8, seed=0),
    )


def _eval_terms(ctx: UpdateContext, data) -> dict[str, float]:
    torch.manual_seed(5)
    ctx.model.eval()
    with torch.no_grad():
        out = ctx.objective(ctx.model, data, step=0)
    ctx.model.train()
    return {"loss": out.loss.item(), **out.terms}


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_joint_updates_reduce_the_loss_on_a_fixed_batch(name):
    objective_cfg, posterior = OBJECTIVES[name]
    ctx = _context(objective_cfg, posterior, JointUpdateConfig())
    rule, data = build_update(ctx), batch(8)
    before = _eval_terms(ctx, data)
    for step in range(25):
        terms = rule(data, step)
        assert all(torch.isfinite(torch.tensor(v)) for v in terms.values())
    after = _eval_terms(ctx, data)
    assert after["rec"] < before["rec"]
    if name != "wae_gan":  # WAE-GAN's loss also moves with the discriminator
        assert after["loss"] < before["loss"]


def test_wae_mmd_with_the_aggressive_update():
    cfg = AggressiveUpdateConfig(type="aggressive", max_inner_steps=4, check_every=2)
    ctx = _context(*OBJECTIVES["wae_mmd_stochastic"], cfg)
    rule = build_update(ctx)
    encoder, decoder = _snapshot(ctx.model.encoder), _snapshot(ctx.model.decoder)
    terms = rule(ctx.sample_batch(), step=0)
    assert terms["inner_steps"] in (2.0, 4.0) and "mmd" in terms
    assert all(torch.isfinite(torch.tensor(v)) for v in terms.values())
    assert _changed(encoder, ctx.model.encoder) and _changed(decoder, ctx.model.decoder)


def test_wae_mmd_with_the_semi_amortized_update():
    cfg = SemiAmortizedUpdateConfig(type="savae", svi=SVIConfig(steps=2))
    ctx = _context(*OBJECTIVES["wae_mmd_stochastic"], cfg, prior={"type": "mog", "components": 2})
    rule = build_update(ctx)
    encoder, prior = _snapshot(ctx.model.encoder), _snapshot(ctx.model.prior)
    terms = rule(batch(8), step=0)
    assert all(torch.isfinite(torch.tensor(v)) for v in terms.values())
    assert _changed(encoder, ctx.model.encoder) and _changed(prior, ctx.model.prior)
