"""The explicit contracts: every registered objective and every registered architecture's networks satisfy the
protocols their callers rely on."""

from __future__ import annotations

import pytest
import torch
from pydantic import TypeAdapter

from textvae.config import OBJECTIVE_TYPES, ModelConfig, ObjectiveConfig
from textvae.models.contracts import Decoder, Encoder, ImageDecoder, TextDecoder, TextEncoder
from textvae.models.model import build_model
from textvae.objectives import build_objective
from textvae.objectives.base import OBJECTIVES, Objective, SemiAmortizedObjective, StatefulObjective
from textvae.registries import ARCHITECTURES


def built(name: str):
    return build_objective(TypeAdapter(ObjectiveConfig).validate_python({"type": name}), steps_per_epoch=10, epochs=2)


def test_every_recipe_objective_is_registered():
    assert set(OBJECTIVE_TYPES) == set(OBJECTIVES)


@pytest.mark.parametrize("name", OBJECTIVE_TYPES)
def test_every_objective_satisfies_the_protocols_its_callers_use(name: str):
    objective = built(name)
    assert isinstance(objective, Objective)
    assert objective.selection_metric in ("elbo_nll", "rec")
    assert isinstance(objective, SemiAmortizedObjective)  # SA-VAE refines any of them
    # only WAE-GAN has an optimiser of its own to checkpoint and guard
    assert isinstance(objective, StatefulObjective) == (name == "wae_gan")


def test_a_plain_callable_is_not_an_objective():
    assert not isinstance(lambda model, batch, step: None, Objective)  # no selection_metric


# -- the networks of every registered architecture ---------------------------------------------------------


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_every_architecture_builds_networks_of_the_contract_its_modality_needs(architecture: str):
    section = ARCHITECTURES.config(architecture)
    model = build_model(ModelConfig(type=architecture, **section.example), 2 if section.modality == "images" else 30)
    text = section.modality == "text"
    assert isinstance(model.decoder, TextDecoder if text else ImageDecoder)
    assert model.decoder.latent_dim == (section.example["latent_dim"] if section.has_latent else 0)
    if section.has_latent:
        assert isinstance(model.encoder, TextEncoder if text else Encoder)
    else:
        assert model.encoder is None


def test_a_module_without_the_posterior_head_is_not_an_encoder():
    assert not isinstance(torch.nn.Linear(2, 2), Encoder)
    assert not isinstance(torch.nn.Linear(2, 2), Decoder)
