"""Recipes: the recipe tree (`recipe`), the sections every method shares (`sections`) and reading YAML files
with `base:` inheritance and `--set` overrides (`loading`). A method's own section lives beside its code; the
names below that are not defined here are looked up in the registries (`textvae.registries`)."""

from __future__ import annotations

from typing import Any

from textvae.config.loading import (
    PATH_KEYS,
    apply_overrides,
    build_recipe,
    layer_recipe,
    load_recipe,
    load_recipe_dict,
    load_saved_recipe_dict,
    resolve_recipe_paths,
    save_recipe,
)
from textvae.config.recipe import (
    MethodSection,
    ModelConfig,
    ModelField,
    ObjectiveConfig,
    PretrainConfig,
    Recipe,
    TrainConfig,
    UpdateConfig,
    pretraining_recipe,
)
from textvae.config.sections import *  # noqa: F403

# the built-in architectures' and methods' sections, importable from here as before they moved beside their code
_METHOD_SECTIONS = {
    "LSTMModelConfig": "textvae.models.lstm",
    "TransformerConfig": "textvae.models.transformer",
    "TransformerModelConfig": "textvae.models.transformer",
    "HuggingFaceConfig": "textvae.models.huggingface",
    "HuggingFaceModelConfig": "textvae.models.huggingface",
    "ImageModelConfig": "textvae.models.images",
    "ImageVAEConfig": "textvae.models.images",
    "ElboConfig": "textvae.objectives.elbo",
    "StochasticEncoderPenalties": "textvae.objectives.wae",
    "WAEMMDConfig": "textvae.objectives.wae",
    "InfoVAEConfig": "textvae.objectives.wae",
    "DiscriminatorConfig": "textvae.objectives.wae_gan",
    "WAEGANConfig": "textvae.objectives.wae_gan",
    "JointUpdateConfig": "textvae.training.updates",
    "AggressiveUpdateConfig": "textvae.training.aggressive",
    "SemiAmortizedUpdateConfig": "textvae.training.semi_amortized",
}


def __getattr__(name: str) -> Any:
    if name in _METHOD_SECTIONS:
        import importlib

        return getattr(importlib.import_module(_METHOD_SECTIONS[name]), name)
    if name in ("MODEL_TYPES", "OBJECTIVE_TYPES", "UPDATE_TYPES"):
        from textvae import registries

        registry = {"MODEL_TYPES": "ARCHITECTURES", "OBJECTIVE_TYPES": "OBJECTIVES", "UPDATE_TYPES": "UPDATES"}[name]
        return tuple(getattr(registries, registry))
    raise AttributeError(f"module 'textvae.config' has no attribute {name!r}")


__all__ = [
    "PATH_KEYS",
    "MethodSection",
    "ModelConfig",
    "ModelField",
    "ObjectiveConfig",
    "PretrainConfig",
    "Recipe",
    "TrainConfig",
    "UpdateConfig",
    "apply_overrides",
    "build_recipe",
    "layer_recipe",
    "load_recipe",
    "load_recipe_dict",
    "load_saved_recipe_dict",
    "pretraining_recipe",
    "resolve_recipe_paths",
    "save_recipe",
]
