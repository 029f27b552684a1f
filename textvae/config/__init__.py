"""Recipes: the recipe tree (`recipe`), the sections every method shares (`sections`) and reading YAML files
with `base:` inheritance and `--set` overrides (`loading`). A method's own section lives beside its code; the
names below that are not defined here are looked up in the registries (`textvae.registries`)."""

from __future__ import annotations

from typing import Any

from textvae.config.loading import (
    PATH_KEYS,
    apply_overrides,
    build_recipe,
    load_recipe,
    load_recipe_dict,
    resolve_recipe_paths,
    save_recipe,
)
from textvae.config.recipe import (
    MethodSection,
    ObjectiveConfig,
    PretrainConfig,
    Recipe,
    TrainConfig,
    UpdateConfig,
    pretraining_recipe,
)
from textvae.config.sections import *  # noqa: F403
from textvae.config.sections import IMAGE_MODELS, LANGUAGE_MODELS, MODEL_TYPES

# the built-in methods' sections, importable from here as before they moved beside their code
_METHOD_SECTIONS = {
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
    if name in ("OBJECTIVE_TYPES", "UPDATE_TYPES"):
        from textvae.registries import OBJECTIVES, UPDATES

        return tuple(OBJECTIVES if name == "OBJECTIVE_TYPES" else UPDATES)
    raise AttributeError(f"module 'textvae.config' has no attribute {name!r}")


__all__ = [
    "IMAGE_MODELS",
    "LANGUAGE_MODELS",
    "MODEL_TYPES",
    "PATH_KEYS",
    "MethodSection",
    "ObjectiveConfig",
    "PretrainConfig",
    "Recipe",
    "TrainConfig",
    "UpdateConfig",
    "apply_overrides",
    "build_recipe",
    "load_recipe",
    "load_recipe_dict",
    "pretraining_recipe",
    "resolve_recipe_paths",
    "save_recipe",
]
