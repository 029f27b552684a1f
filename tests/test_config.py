"""Recipes (textvae.config): YAML loading, `base:` inheritance, `--set` overrides, one-line errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from textvae.config import Recipe, apply_overrides, load_recipe, load_recipe_dict
from textvae.errors import TextVAEError

YamlWriter = Callable[..., Path]

MINIMAL = {"data": {"train": "train.txt", "valid": "valid.txt"}}


def recipe_error(path: Path, overrides: list[str] | None = None) -> str:
    """Load a recipe that must fail; return the error message after checking it is one line naming the file."""
    with pytest.raises(TextVAEError) as info:
        load_recipe(path, overrides)
    message = str(info.value)
    assert "\n" not in message, message
    assert path.name in message, message
    return message


def test_load_minimal_recipe_fills_defaults(tmp_path: Path, write_yaml: YamlWriter):
    recipe = load_recipe(write_yaml(tmp_path / "r.yaml", {**MINIMAL, "model": {"latent_dim": 8}}))
    assert isinstance(recipe, Recipe)
    assert recipe.data.train == "train.txt" and recipe.data.test is None
    assert recipe.model.latent_dim == 8
    assert recipe.model.hidden_dim == 1024  # default
    assert recipe.data.tokenizer.type == "word"


def test_base_inheritance_deep_merges(tmp_path: Path, write_yaml: YamlWriter):
    write_yaml(
        tmp_path / "common" / "_base.yaml",
        {
            **MINIMAL,
            "name": "base",
            "model": {"latent_dim": 32, "hidden_dim": 64, "embed_dim": 16},
            "train": {"epochs": 10, "lr_decay": {"factor": 0.25, "patience": 3}},
        },
    )
    child = write_yaml(
        tmp_path / "child.yaml",
        {
            "base": "common/_base.yaml",  # relative to the child file
            "name": "child",
            "model": {"latent_dim": 4},
            "train": {"lr_decay": {"patience": 5}},
        },
    )
    recipe = load_recipe(child)
    assert recipe.name == "child"
    assert (recipe.model.latent_dim, recipe.model.hidden_dim, recipe.model.embed_dim) == (4, 64, 16)
    assert recipe.train.epochs == 10
    assert (recipe.train.lr_decay.factor, recipe.train.lr_decay.patience) == (0.25, 5)
    assert "base" not in load_recipe_dict(child)


def test_base_chain_of_three(tmp_path: Path, write_yaml: YamlWriter):
    write_yaml(tmp_path / "a.yaml", {**MINIMAL, "model": {"latent_dim": 1, "embed_dim": 1}})
    write_yaml(tmp_path / "b.yaml", {"base": "a.yaml", "model": {"latent_dim": 2, "hidden_dim": 2}})
    write_yaml(tmp_path / "c.yaml", {"base": "b.yaml", "model": {"latent_dim": 3}})
    model = load_recipe(tmp_path / "c.yaml").model
    assert (model.latent_dim, model.hidden_dim, model.embed_dim) == (3, 2, 1)


def test_base_loop_is_a_clear_error(tmp_path: Path, write_yaml: YamlWriter):
    write_yaml(tmp_path / "a.yaml", {"base": "b.yaml", **MINIMAL})
    write_yaml(tmp_path / "b.yaml", {"base": "a.yaml"})
    message = recipe_error(tmp_path / "a.yaml")
    assert "loop" in message


def test_missing_base_names_the_base_file(tmp_path: Path, write_yaml: YamlWriter):
    path = write_yaml(tmp_path / "r.yaml", {"base": "nope.yaml", **MINIMAL})
    with pytest.raises(TextVAEError, match=r"nope\.yaml.*not found"):
        load_recipe(path)


def test_apply_overrides_parses_yaml_scalars_and_keeps_siblings():
    data = {"model": {"latent_dim": 32, "hidden_dim": 64}, "train": {"lr_decay": {"factor": 0.5, "patience": 2}}}
    out = apply_overrides(
        data,
        [
            "model.latent_dim=16",
            "train.lr_decay.patience=7",
            "optim.lr=0.5",
            "data.tokenizer.lowercase=true",
            "train.max_steps=null",
            "name=my run",
            "description=a=b",  # only the first '=' separates key and value
        ],
    )
    assert out["model"] == {"latent_dim": 16, "hidden_dim": 64}
    assert out["train"]["lr_decay"] == {"factor": 0.5, "patience": 7}
    assert out["optim"] == {"lr": 0.5}
    assert out["data"]["tokenizer"]["lowercase"] is True
    assert out["train"]["max_steps"] is None
    assert out["name"] == "my run"
    assert out["description"] == "a=b"
    assert data["model"]["latent_dim"] == 32, "the input dict must not be modified"


@pytest.mark.parametrize("item", ["model.latent_dim", "model..latent_dim=3", "=3"])
def test_malformed_override_is_an_error(item: str):
    with pytest.raises(TextVAEError, match="--set"):
        apply_overrides({}, [item])


def test_load_recipe_applies_overrides(tmp_path: Path, write_yaml: YamlWriter):
    path = write_yaml(tmp_path / "r.yaml", {**MINIMAL, "train": {"epochs": 3, "seed": 1}})
    recipe = load_recipe(path, ["train.epochs=7", "optim.lr=1e-3"])
    assert (recipe.train.epochs, recipe.train.seed) == (7, 1)
    assert recipe.optim.lr == pytest.approx(1e-3)


BAD_RECIPES = {
    "unknown key": ({**MINIMAL, "model": {"hiden_dim": 3}}, ["model.hiden_dim", "unknown key"]),
    "wrong type": ({**MINIMAL, "train": {"epochs": "many"}}, ["train.epochs", "many"]),
    "missing required key": ({"data": {"valid": "v.txt"}}, ["data.train", "missing"]),
    "invalid YAML": ("data:\n  train: a\n  valid: [b\nmodel: x\n", ["line 4", "invalid YAML"]),
    "bad indentation": ("data:\n  train: a\n   valid: b\n", ["line 3", "invalid YAML"]),
    "empty file": ("", ["empty"]),
    "only a comment": ("# nothing here\n", ["empty"]),
    "a list": ("- data\n- model\n", ["mapping", "list"]),
    "a scalar": ("hello\n", ["mapping", "str"]),
    "base not a string": ({"base": 3, **MINIMAL}, ["base"]),
}


@pytest.mark.parametrize("name", BAD_RECIPES)
def test_bad_recipe_is_one_line_naming_file_and_key(tmp_path: Path, write_yaml: YamlWriter, name: str):
    content, expected = BAD_RECIPES[name]
    message = recipe_error(write_yaml(tmp_path / "bad.yaml", content))
    for part in expected:
        assert part in message, (part, message)


def test_bad_override_names_the_key(tmp_path: Path, write_yaml: YamlWriter):
    path = write_yaml(tmp_path / "r.yaml", MINIMAL)
    assert "model.hiden_dim" in recipe_error(path, ["model.hiden_dim=3"])
    assert "train.epochs" in recipe_error(path, ["train.epochs=many"])


def test_non_utf8_recipe(tmp_path: Path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\ndata: {train: a, valid: b}\n".encode("latin-1"))
    assert "UTF-8" in recipe_error(path)


def test_missing_recipe_file(tmp_path: Path):
    assert "not found" in recipe_error(tmp_path / "absent.yaml")


def test_recipe_path_that_is_a_directory(tmp_path: Path):
    (tmp_path / "dir.yaml").mkdir()
    recipe_error(tmp_path / "dir.yaml")


# -- a child that changes a section's type -------------------------------------------------------------------

LSTM_BASE = {
    **MINIMAL,
    "model": {"type": "lstm_vae", "latent_dim": 8, "hidden_dim": 64, "dropout_in": 0.1, "word_dropout": 0.2},
    "objective": {"type": "elbo", "beta": 0.5, "kl_schedule": {"type": "linear", "warmup_epochs": 2}},
}


def test_a_child_of_another_architecture_keeps_only_the_base_keys_its_section_has(tmp_path: Path, write_yaml):
    write_yaml(tmp_path / "base.yaml", LSTM_BASE)
    child = {"base": "base.yaml", "model": {"type": "transformer_vae", "transformer": {"d_model": 16}}}
    recipe = load_recipe(write_yaml(tmp_path / "child.yaml", child))
    model = recipe.model.model_dump()
    assert (model["latent_dim"], model["word_dropout"], model["transformer"]["d_model"]) == (8, 0.2, 16)
    assert "hidden_dim" not in model and "dropout_in" not in model
    assert recipe.objective.beta == 0.5  # the objective's type did not change: merged as before


def test_a_child_of_the_same_architecture_merges_as_before(tmp_path: Path, write_yaml):
    write_yaml(tmp_path / "base.yaml", LSTM_BASE)
    recipe = load_recipe(write_yaml(tmp_path / "lm.yaml", {"base": "base.yaml", "model": {"type": "lstm_lm"}}))
    assert (recipe.model.hidden_dim, recipe.model.dropout_in, recipe.model.has_latent) == (64, 0.1, False)


def test_set_of_another_type_drops_the_keys_of_the_old_one(tmp_path: Path, write_yaml):
    path = write_yaml(tmp_path / "r.yaml", LSTM_BASE)
    changes = ["model.type=transformer_vae", "objective.type=wae_mmd", "model.posterior=deterministic"]
    recipe = load_recipe(path, changes)
    assert type(recipe.model).__name__ == "TransformerModelConfig" and recipe.model.latent_dim == 8
    assert recipe.objective.type == "wae_mmd" and not hasattr(recipe.objective, "beta")
    # an architecture's own key under another architecture is still an unknown key
    assert "key 'model.hidden_dim': unknown key" in recipe_error(path, ["model.type=transformer_vae",
                                                                        "model.hidden_dim=3"])  # fmt: skip


def test_an_unknown_type_is_an_error_not_a_silent_drop(tmp_path: Path, write_yaml):
    message = recipe_error(write_yaml(tmp_path / "r.yaml", LSTM_BASE), ["model.type=lstm_vea"])
    assert "key 'model': unknown architecture 'lstm_vea' (known: bernoulli_vae, hf_vae, lstm_lm" in message
