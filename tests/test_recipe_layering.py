"""A child recipe or `--set` that changes the type of a nested typed section (the pretraining objective, the prior)
keeps only the parent's keys the new type's section has, as the top-level model, objective and update sections do;
a saved run recipe holding every prior's keys loads."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from textvae.config import load_recipe, load_saved_recipe_dict
from textvae.errors import TextVAEError

DATA = {"train": "train.txt", "valid": "valid.txt"}
PRETRAINING = {
    "data": DATA,
    "train": {"pretrain": {"objective": {"type": "elbo", "beta": 0.0, "kl_schedule": {"type": "linear"}}}},
}
VAMP = {"data": DATA, "model": {"prior": {"type": "vamp", "components": 5, "pseudo_length": 8, "kl_samples": 3}}}


def child(tmp_path: Path, write_yaml, base: dict, over: dict, overrides: list[str] | None = None):
    write_yaml(tmp_path / "base.yaml", base)
    return load_recipe(write_yaml(tmp_path / "child.yaml", {"base": "base.yaml", **over}), overrides)


def test_a_child_changing_the_pretraining_objective_drops_the_old_objectives_keys(tmp_path: Path, write_yaml):
    over = {"train": {"pretrain": {"objective": {"type": "wae_mmd", "lambda": 3.0}}}}
    objective = child(tmp_path, write_yaml, PRETRAINING, over).train.pretrain.objective
    assert objective.type == "wae_mmd" and objective.lambda_ == 3.0
    assert not hasattr(objective, "beta") and not hasattr(objective, "kl_schedule")


def test_set_of_the_pretraining_objective_type_drops_the_old_keys(tmp_path: Path, write_yaml):
    path = write_yaml(tmp_path / "r.yaml", PRETRAINING)
    objective = load_recipe(path, ["train.pretrain.objective.type=wae_mmd"]).train.pretrain.objective
    assert objective.type == "wae_mmd" and not hasattr(objective, "beta")


def test_a_pretraining_objective_of_the_same_type_merges_as_before(tmp_path: Path, write_yaml):
    over = {"train": {"pretrain": {"objective": {"beta": 0.1}}}}
    objective = child(tmp_path, write_yaml, PRETRAINING, over).train.pretrain.objective
    assert (objective.type, objective.beta, objective.kl_schedule.type) == ("elbo", 0.1, "linear")


def test_a_child_changing_the_prior_keeps_the_keys_the_new_prior_has(tmp_path: Path, write_yaml):
    prior = child(tmp_path, write_yaml, VAMP, {"model": {"prior": {"type": "mog"}}}).model.prior
    assert (prior.type, prior.components, prior.kl_samples) == ("mog", 5, 3)
    assert not hasattr(prior, "pseudo_length")
    prior = child(tmp_path, write_yaml, VAMP, {}, ["model.prior.type=standard_normal"]).model.prior
    assert (prior.type, prior.kl_samples) == ("standard_normal", 3)
    assert not hasattr(prior, "components")


def test_settings_under_a_prior_given_by_name_keep_its_type(tmp_path: Path, write_yaml):
    base = {"data": DATA, "model": {"prior": "mog"}}
    prior = child(tmp_path, write_yaml, base, {"model": {"prior": {"components": 3}}}).model.prior
    assert (prior.type, prior.components) == ("mog", 3)


def test_a_prior_key_under_another_prior_is_still_an_unknown_key(tmp_path: Path, write_yaml):
    with pytest.raises(TextVAEError, match=r"key 'model.prior.pseudo_length': unknown key"):
        child(tmp_path, write_yaml, VAMP, {"model": {"prior": {"type": "mog", "pseudo_length": 4}}})


def test_a_saved_recipe_holding_every_priors_keys_loads_with_its_own(tmp_path: Path):
    prior = {"type": "mog", "components": 4, "pseudo_length": 16, "kl_samples": 1, "learnable": False}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"data": DATA, "model": {"type": "lstm_vae", "prior": prior}}))
    saved = load_saved_recipe_dict(path)
    assert saved["model"]["prior"] == {"type": "mog", "components": 4, "kl_samples": 1, "learnable": False}
