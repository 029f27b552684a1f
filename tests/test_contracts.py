"""The explicit objective contract: every registered objective satisfies the protocol its callers rely on."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter

from textvae.config import OBJECTIVE_TYPES, ObjectiveConfig
from textvae.objectives import build_objective
from textvae.objectives.base import OBJECTIVES, Objective, SemiAmortizedObjective, StatefulObjective


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
