"""Priors and posteriors in registries: every registered prior trains, saves, loads and evaluates; the scaled
normal plugin example (examples/plugins/scaled_normal_prior.py) is exact and runs as any other prior; a prior's
section holds its own keys only, in recipes and in saved config.json files."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch

from tests.conftest import tiny_lstm_vae
from tests.test_plugins import (
    EXAMPLES,
    SPLITS,
    no_inherited_plugins,  # noqa: F401  (autouse: no --plugin reaches later subprocesses)
    quick,
)
from textvae import api, plugins
from textvae.config import PriorConfig, PriorSection, Recipe, build_recipe, load_recipe
from textvae.errors import TextVAEError
from textvae.models.model import FORMAT_VERSION, load_model
from textvae.models.posteriors import Deterministic, DiagonalGaussian, PosteriorHead
from textvae.models.priors import MixtureOfGaussians, MixtureOfGaussiansConfig, StandardNormal, StandardNormalConfig
from textvae.registries import POSTERIORS, PRIORS

PLUGIN = EXAMPLES / "scaled_normal_prior.py"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, write_splits) -> Path:
    return write_splits(tmp_path_factory.mktemp("corpus"), 120, 24, 16)


def scaled_normal(latent_dim: int, scale: float):
    """The example plugin's prior (the file is imported once per process)."""
    plugins.load_plugin_file(PLUGIN)
    section = PRIORS.config("scaled_normal")(scale=scale)
    return PRIORS["scaled_normal"](section, latent_dim, None)


def posterior() -> DiagonalGaussian:
    return DiagonalGaussian(torch.tensor([[0.3, -1.2, 0.0], [2.0, 0.5, -0.7]]), torch.tensor([[-0.5, 0.8, 0.0]] * 2))


# -- the scaled normal example -----------------------------------------------------------------------------------


def test_the_scaled_normal_kl_is_the_closed_form_and_matches_monte_carlo():
    prior, q = scaled_normal(3, 2.5), posterior()
    exact = torch.distributions.kl_divergence(
        torch.distributions.Normal(q.mean, q.std), torch.distributions.Normal(0.0, 2.5)
    ).sum(-1)
    assert torch.allclose(prior.kl(q), exact, atol=1e-6)
    z = torch.randn(4, 5, 3) * 3
    assert torch.allclose(prior.log_prob(z), torch.distributions.Normal(0.0, 2.5).log_prob(z).sum(-1), atol=1e-5)
    torch.manual_seed(0)
    monte_carlo = (q.log_prob(z := q.rsample(200_000)) - prior.log_prob(z)).mean(1)  # the base class's estimate
    assert torch.allclose(monte_carlo, exact, atol=0.02), (monte_carlo, exact)
    samples = prior.sample(50_000)
    assert samples.shape == (50_000, 3) and abs(samples.std().item() - 2.5) < 0.03


def test_the_scaled_normal_at_scale_1_is_the_standard_normal_to_the_last_bit():
    prior, q = scaled_normal(3, 1.0), posterior()
    assert torch.equal(prior.kl(q), StandardNormal(3).kl(q))
    z = torch.randn(4, 3)
    assert torch.allclose(prior.log_prob(z), StandardNormal(3).log_prob(z))


def test_the_scaled_normal_recipe_trains_records_the_plugin_loads_and_evaluates(corpus: Path, tmp_path: Path,
                                                                                  monkeypatch):  # fmt: skip
    plugins.load_plugin_file(PLUGIN)
    paths = [f"data.{split}={corpus / f'{split}.txt'}" for split in SPLITS]
    quick_run = ["train.epochs=1", "train.max_steps=3", "train.val_latent_metrics=false"]
    recipe = load_recipe(EXAMPLES / "scaled_normal.yaml", [*paths, *quick_run])
    own = {"type": "scaled_normal", "kl_samples": 1, "learnable": True, "scale": 2.0}
    assert recipe.model.prior.model_dump() == own
    assert recipe.model.type == "lstm_vae" and recipe.objective.beta == 1.0  # the rest is the base recipe's
    run = api.train(recipe, tmp_path / "run")
    record = [{"path": str(PLUGIN), "sha256": hashlib.sha256(PLUGIN.read_bytes()).hexdigest()}]
    assert json.loads((run.directory / "plugins.json").read_text()) == record
    config = json.loads((run.directory / "model" / "config.json").read_text())
    assert config["prior"] == own
    loaded = api.load_run(run.directory)
    assert type(loaded.model.prior).__name__ == "ScaledNormal" and loaded.model.prior.scale == 2.0
    metrics = api.evaluate_run(loaded, limit=8, iw_samples=2)
    assert math.isfinite(metrics["iw_nll"]) and metrics["kl"] > 0
    monkeypatch.setattr(plugins, "_loaded_files", {})  # as a process that has not imported the plugin
    with pytest.raises(TextVAEError, match=f"pass --plugin {PLUGIN}"):
        api.load_run(run.directory)


def test_free_bits_need_a_prior_with_the_per_dimension_kl(corpus: Path):
    plugins.load_plugin_file(PLUGIN)
    with pytest.raises(TextVAEError, match="objective.free_bits needs the per-dimension KL"):
        build_recipe(quick(corpus, model={"prior": {"type": "scaled_normal"}}, objective={"free_bits": 0.5}), "r.yaml")
    assert build_recipe(quick(corpus, objective={"free_bits": 0.5}), "r.yaml").model.prior.per_dimension_kl


# -- every registered prior ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PRIORS))
def test_every_prior_trains_saves_loads_and_evaluates_from_its_example(corpus: Path, tmp_path: Path, name: str):
    section = PRIORS.config(name)
    recipe = build_recipe(quick(corpus, model={"latent_dim": 2, "prior": {"type": name, **section.example}}), "tiny")
    run = api.train(recipe, tmp_path / "run")
    config = json.loads((run.directory / "model" / "config.json").read_text())
    assert config["format_version"] == FORMAT_VERSION
    assert set(config["prior"]) == set(section.model_fields)  # its own keys, no other prior's
    loaded = api.load_run(run.directory)
    assert loaded.model.config.section.prior == recipe.model.prior == loaded.recipe.model.prior
    metrics = api.evaluate_run(loaded, limit=8, iw_samples=2)
    assert math.isfinite(metrics["iw_nll"]) and math.isfinite(metrics["kl"])


def test_a_recipe_names_a_key_the_prior_has_not(corpus: Path):
    model = {"prior": {"type": "standard_normal", "components": 5}}
    with pytest.raises(TextVAEError, match=r"key 'model\.prior\.components': unknown key") as err:
        build_recipe(quick(corpus, model=model), "r.yaml")
    assert "\n" not in str(err.value)
    with pytest.raises(TextVAEError, match=r"key 'model\.prior': unknown prior 'flow' \(known: .*mog"):
        build_recipe(quick(corpus, model={"prior": "flow"}), "r.yaml")


def test_prior_config_builds_the_registered_section():
    assert type(PriorConfig()) is StandardNormalConfig and PriorConfig() == StandardNormalConfig()
    mog = PriorConfig(type="mog", components=3)
    assert type(mog) is MixtureOfGaussiansConfig and (mog.components, mog.kl_samples) == (3, 1)
    assert isinstance(mog, PriorSection) and MixtureOfGaussiansConfig().components == 10
    assert Recipe.model_validate({"data": {"train": "a", "valid": "b"}, "model": {"prior": "mog"}}).model.prior == (
        MixtureOfGaussiansConfig()
    )
    vamp = PRIORS.config("vamp")()
    assert (vamp.components, vamp.pseudo_length, vamp.kl_samples, vamp.learnable) == (10, 16, 1, True)
    assert set(PRIORS.config("vamp").model_fields) == {"type", "kl_samples", "learnable", "components", "pseudo_length"}
    assert PriorConfig.model_construct(type="flow").type == "flow"


def test_the_vamp_prior_refuses_an_image_model():
    images = {"format": "images", "train": "a.npz", "valid": "b.npz"}
    with pytest.raises(ValueError, match="model.prior vamp learns pseudo-documents: text models only"):
        Recipe.model_validate({"data": images, "model": {"type": "bernoulli_vae", "prior": "vamp"}})
    Recipe.model_validate({"data": images, "model": {"type": "bernoulli_vae", "prior": "mog"}})


# -- saved configs -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["standard_normal", "mog"])
def test_a_format_3_config_holding_every_priors_keys_loads(tmp_path: Path, name: str):
    model = tiny_lstm_vae(7, 0, latent_dim=2, prior={"type": name, **PRIORS.config(name).example}).eval()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    every = {"type": name, "components": 3, "pseudo_length": 16, "kl_samples": 1, "learnable": True}
    (tmp_path / "config.json").write_text(json.dumps({**config, "format_version": 3, "prior": every}))
    loaded = load_model(tmp_path)
    assert loaded.config.section.prior == model.config.section.prior
    assert isinstance(loaded.prior, MixtureOfGaussians if name == "mog" else StandardNormal)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    loaded.save_pretrained(tmp_path / "again")
    again = json.loads((tmp_path / "again" / "config.json").read_text())
    assert again["format_version"] == FORMAT_VERSION and set(again["prior"]) == set(PRIORS.config(name).model_fields)


# -- posteriors ----------------------------------------------------------------------------------------------------


def test_an_unknown_posterior_lists_the_known_ones(corpus: Path):
    with pytest.raises(TextVAEError, match=r"key 'model\.posterior': unknown posterior 'flow' \(known: det") as err:
        build_recipe(quick(corpus, model={"posterior": "flow"}), "r.yaml")
    assert "deterministic, gaussian" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"unknown posterior 'flow' \(known: deterministic, gaussian"):
        PosteriorHead(4, 2, "flow")


def test_the_posterior_registry_says_what_the_head_produces():
    assert POSTERIORS["gaussian"] is DiagonalGaussian and POSTERIORS["deterministic"] is Deterministic
    torch.manual_seed(0)
    gaussian = PosteriorHead(5, 3, "gaussian")
    torch.manual_seed(0)
    point = PosteriorHead(5, 3, "deterministic")
    assert gaussian.weight.shape == (6, 5) and point.weight.shape == (3, 5)
    summary = torch.randn(2, 5)
    q, p = gaussian(summary), point(summary)
    assert type(q) is DiagonalGaussian and torch.equal(q.mean, (summary @ gaussian.weight.T)[:, :3])
    assert type(p) is Deterministic and torch.equal(p.mean, summary @ point.weight.T)
    model = tiny_lstm_vae(7, 0, latent_dim=2, posterior="deterministic")
    assert not model.stochastic and model.config.section.stochastic_posterior is False
