"""Priors: sampling, densities, Monte Carlo KL, and IW-NLL under a non-Gaussian prior checked by quadrature."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_lstm_vae

from textvae.config import EvalConfig, PriorConfig, Recipe
from textvae.data.batching import TokenizedSplit, collate
from textvae.errors import TextVAEError
from textvae.evaluation import evaluate
from textvae.evaluation.likelihood import elbo_nll, iw_log_marginal
from textvae.models.posteriors import DiagonalGaussian
from textvae.models.priors import MixtureOfGaussians, StandardNormal, VampPrior, build_prior

pytestmark = pytest.mark.usefixtures("torch_single_thread")

VOCAB = 7
SENTENCES = [[4], [5, 6], [4, 4, 5], [6, 5, 4, 6], [5]]


def mog(latent_dim: int = 1, components: int = 3, spread: float = 3.0, sd: float = 0.5) -> MixtureOfGaussians:
    """Components at evenly spaced means in [-spread, spread] with standard deviation `sd`, unequal weights."""
    prior = MixtureOfGaussians(latent_dim, components)
    with torch.no_grad():
        prior.means.copy_(torch.linspace(-spread, spread, components).view(-1, 1).expand(-1, latent_dim))
        prior.logvars.fill_(math.log(sd**2))
        prior.logits.copy_(torch.linspace(0, 1, components))
    return prior


def test_mixture_density_matches_torch_distributions():
    prior = mog(latent_dim=2, components=4)
    mixture = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=prior.logits),
        torch.distributions.Independent(torch.distributions.Normal(prior.means, (0.5 * prior.logvars).exp()), 1),
    )
    z = torch.randn(5, 3, 2) * 3
    assert torch.allclose(prior.log_prob(z), mixture.log_prob(z), atol=1e-5)


def test_mixture_samples_follow_the_weights_and_components():
    prior = mog(latent_dim=1, components=3)
    torch.manual_seed(1)
    z = prior.sample(30_000)[:, 0]
    nearest = (z.view(-1, 1) - prior.means.view(1, -1)).abs().argmin(1)  # components 3 apart, sd 0.5
    freq = torch.bincount(nearest, minlength=3).float() / len(z)
    assert torch.allclose(freq, torch.softmax(prior.logits, 0), atol=0.015)
    one = prior.sample_component(2, 10_000)[:, 0]
    assert abs(one.mean().item() - 3.0) < 0.03 and abs(one.std().item() - 0.5) < 0.02


def test_monte_carlo_kl_matches_the_exact_kl_for_a_one_component_mixture():
    """A 1-component MoG is a Gaussian: the MC estimate averages to the closed-form KL between Gaussians."""
    prior = MixtureOfGaussians(3, components=1)
    with torch.no_grad():
        prior.means.copy_(torch.tensor([[0.5, -1.0, 0.0]]))
        prior.logvars.copy_(torch.tensor([[0.0, 0.7, -0.4]]))
    q = DiagonalGaussian(torch.tensor([[0.2, 0.1, -0.3], [1.0, -2.0, 0.5]]), torch.tensor([[-1.0, 0.3, 0.0]] * 2))
    exact = torch.distributions.kl_divergence(
        torch.distributions.Normal(q.mean, q.std),
        torch.distributions.Normal(prior.means[0], (0.5 * prior.logvars[0]).exp()),
    ).sum(-1)
    torch.manual_seed(0)
    estimate = prior.kl(q, q.rsample(200_000))
    assert torch.allclose(estimate, exact, atol=0.02), (estimate, exact)


def test_standard_normal_kl_is_the_closed_form():
    q = DiagonalGaussian(torch.tensor([[0.3, -1.0]]), torch.tensor([[0.5, -0.2]]))
    assert torch.allclose(StandardNormal(2).kl(q), q.kl().sum(-1))


def exact_log_marginal(model, tokens: torch.Tensor, grid: int = 4001, bound: float = 9.0) -> torch.Tensor:
    """log p(x) = log ∫ p(x|z) p(z) dz by the trapezoid rule with the model's own prior (1-d latent)."""
    z = torch.linspace(-bound, bound, grid)
    log_weights = torch.full((grid,), (2 * bound) / (grid - 1)).log()
    log_weights[[0, -1]] -= math.log(2)
    with torch.inference_mode():
        log_lik = model.log_likelihood(tokens, z.view(1, grid, 1).expand(tokens.shape[0], -1, -1)).double()
        log_prior = model.prior.log_prob(z.view(grid, 1)).double()
    return torch.logsumexp(log_lik + log_prior + log_weights.double(), dim=1)


@pytest.mark.parametrize("kind", ["mog", "vamp"])
def test_iw_nll_uses_the_models_prior(kind, monkeypatch):
    """With k = 20,000 the IW bound is within 0.02 nats of quadrature of ∫ p(x|z) p(z) dz under the prior.

    The proposal is made broad (N(0, 3²) for every document) so that k = 20,000 samples cover a multimodal
    posterior; under the wrong prior (N(0, 1) for the same decoder) log p(x) is measurably different.
    """
    vamp = {"pseudo_length": 2} if kind == "vamp" else {}  # a key of the VampPrior's section only
    model = tiny_lstm_vae(VOCAB, 0, latent_dim=1, prior={"type": kind, "components": 3, **vamp})
    if kind == "mog":
        model.prior = mog()
    else:  # pseudo-inputs far apart give posteriors far apart: a mixture unlike N(0, 1)
        torch.manual_seed(3)
        with torch.no_grad():
            model.prior.pseudo_inputs.normal_(0.0, 4.0)
    broad = lambda tokens, lengths: DiagonalGaussian(  # noqa: E731
        torch.zeros(tokens.shape[0], 1), torch.full((tokens.shape[0], 1), math.log(9.0))
    )
    monkeypatch.setattr(model, "encode", broad)
    batch = collate(list(enumerate(SENTENCES)))
    exact = exact_log_marginal(model, batch.tokens)
    torch.manual_seed(1)
    with torch.inference_mode():
        estimate = iw_log_marginal(model, batch.tokens, batch.lengths, k=20_000, chunk=5000).double()
    assert torch.all((estimate - exact).abs() < 0.02), (estimate, exact)
    prior, model.prior = model.prior, StandardNormal(1)
    wrong = exact_log_marginal(model, batch.tokens)
    model.prior = prior
    assert (wrong - exact).abs().max() > 0.05  # more than twice the tolerance above


def test_vamp_prior_is_the_mixture_of_encoder_posteriors_on_its_pseudo_inputs():
    model = tiny_lstm_vae(VOCAB, 0, latent_dim=2, prior={"type": "vamp", "components": 4, "pseudo_length": 3})
    prior = model.prior
    assert isinstance(prior, VampPrior) and prior.pseudo_inputs.shape == (4, 5, model.encoder.embedding_dim)
    q = model.encoder.embedded(prior.pseudo_inputs, torch.full((4,), 3))
    z = torch.randn(6, 2)
    by_hand = torch.logsumexp(q.log_prob(z.unsqueeze(0).expand(4, -1, -1)), dim=0) - math.log(4)  # [6]
    assert torch.allclose(prior.log_prob(z), by_hand, atol=1e-5)
    assert prior.sample(7).shape == (7, 2) and prior.sample_component(1, 5).shape == (5, 2)
    # the encoder is shared, not a second copy: its weights are saved once, the pseudo-inputs are the prior's own
    keys = model.state_dict().keys()
    assert "prior.pseudo_inputs" in keys and not any(k.startswith("prior._encoder") for k in keys)


def test_gradients_reach_the_prior_through_the_elbo():
    model = tiny_lstm_vae(VOCAB, 0, latent_dim=2, prior={"type": "mog", "components": 3})
    batch = collate(list(enumerate(SENTENCES)))
    out = model(batch.tokens, batch.lengths)
    (-out.log_likelihood.mean() + out.kl.mean()).backward()
    assert model.prior.means.grad.abs().sum() > 0 and model.prior.logits.grad.abs().sum() > 0


def test_mixture_prior_model_saves_and_loads(tmp_path):
    from textvae.models.model import load_model

    model = tiny_lstm_vae(VOCAB, 0, latent_dim=2, prior={"type": "mog", "components": 3}).eval()
    with torch.no_grad():
        model.prior.means.add_(1.0)
    model.save_pretrained(tmp_path)
    loaded = load_model(tmp_path)
    assert isinstance(loaded.prior, MixtureOfGaussians)
    assert torch.equal(loaded.prior.means, model.prior.means)


def test_evaluation_with_a_mixture_prior_reports_total_kl_only():
    model = tiny_lstm_vae(VOCAB, 0, latent_dim=2, prior={"type": "mog", "components": 3})
    metrics = evaluate(model, TokenizedSplit(SENTENCES), 2, EvalConfig(iw_samples=10, mi_batch_size=5))
    assert "kl_per_dim" not in metrics  # no per-dimension split of a KL to a mixture
    assert metrics["kl"] > 0 and metrics["iw_nll"] <= metrics["elbo_nll"] + 0.5


def test_deterministic_encoder_evaluation_has_reconstruction_and_active_units_only():
    model = tiny_lstm_vae(VOCAB, 0, latent_dim=2, posterior="deterministic")
    metrics = evaluate(model, TokenizedSplit(SENTENCES), 2, EvalConfig(iw_samples=10))
    assert {"rec", "rec_ppl", "au"} <= set(metrics)
    assert not {"elbo_nll", "iw_nll", "kl", "mi", "ppl"} & set(metrics)
    loader = [collate(list(enumerate(SENTENCES)))]
    assert elbo_nll(model, loader)["rec"] == pytest.approx(metrics["rec"], rel=1e-5)  # z = the encoder's point


def test_recipe_refusals_name_the_key():
    base = {"data": {"train": "a", "valid": "b"}}
    with pytest.raises(ValueError, match="free_bits"):
        Recipe.model_validate({**base, "model": {"prior": {"type": "mog"}}, "objective": {"free_bits": 0.5}})
    with pytest.raises(ValueError, match="stochastic encoder"):
        Recipe.model_validate({**base, "model": {"posterior": "deterministic"}})
    with pytest.raises(TextVAEError, match="unknown prior"):
        build_prior(PriorConfig.model_construct(type="flow"), 2, object())


def test_component_samples_decode_each_mixture_component():
    from textvae.data.tokenizers import WordTokenizer
    from textvae.evaluation.text import component_samples
    from textvae.generation.decoding import DecodingConfig

    model = tiny_lstm_vae(VOCAB, 0, latent_dim=1, prior={"type": "mog", "components": 3})
    model.prior = mog()
    tokenizer = WordTokenizer.from_vocab(["a", "b", "c"])
    cfg = DecodingConfig(strategy="sample", max_length=6, allow_unk=False)
    out = component_samples(model, 4, cfg, tokenizer, seed=5)
    assert [c["component"] for c in out] == [0, 1, 2] and all(len(c["texts"]) == 4 for c in out)
    assert sum(c["weight"] for c in out) == pytest.approx(1.0)
    assert component_samples(model, 4, cfg, tokenizer, seed=5) == out  # reproducible for a seed
    greedy = component_samples(model, 2, DecodingConfig(max_length=6, allow_unk=False), tokenizer)
    # components 3 apart with sd 0.5: greedy decodes differ between the outer components of this decoder
    assert greedy[0]["texts"] != greedy[2]["texts"]
    with pytest.raises(TypeError, match="no mixture components"):
        component_samples(tiny_lstm_vae(VOCAB, 0), 2, cfg, tokenizer)


def test_configs_saved_before_prior_settings_still_load():
    from textvae.models.model import LatentVariableConfig

    old = LatentVariableConfig(vocab_size=10, prior="standard_normal")  # config.json of earlier versions
    assert old.section.prior == PriorConfig()


def test_a_fixed_prior_is_not_trained():
    from textvae.training.updates import trainable

    model = tiny_lstm_vae(VOCAB, 0, latent_dim=2, prior={"type": "mog", "components": 3, "learnable": False})
    assert not any(p.requires_grad for p in model.prior.parameters())
    assert not {id(p) for p in model.prior.parameters()} & {id(p) for p in trainable(model)}
    batch = collate(list(enumerate(SENTENCES)))
    out = model(batch.tokens, batch.lengths)
    (-out.log_likelihood.mean() + out.kl.mean()).backward()
    assert all(p.grad is None for p in model.prior.parameters())
    assert model.encoder.to_posterior.weight.grad is not None


def test_a_fixed_prior_stays_fixed_after_loading(tmp_path):
    from textvae.models.model import load_model

    model = tiny_lstm_vae(VOCAB, 0, latent_dim=2, prior={"type": "mog", "components": 3, "learnable": False})
    model.save_pretrained(tmp_path)
    loaded = load_model(tmp_path)
    assert torch.equal(loaded.prior.means, model.prior.means)
    assert not any(p.requires_grad for p in loaded.prior.parameters())
