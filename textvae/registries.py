"""The registries a recipe's sections name by `type:`, in a leaf module: the recipe schema, the architectures,
the objectives and the update rules all import them without importing each other."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textvae.registry import Registry

# factory (cfg, steps_per_epoch, epochs) -> Objective, with its recipe section (`objective:`)
OBJECTIVES: Registry[Callable] = Registry("objective", builtins="textvae.objectives")
# UpdateRule subclass built from an UpdateContext, with its recipe section (`update:`)
UPDATES: Registry[Callable] = Registry("update rule", builtins="textvae.training.rules")
# builder (LatentVariableConfig) -> (encoder | None, decoder), with its recipe section (`model:`)
ARCHITECTURES: Registry[Callable] = Registry("architecture", builtins="textvae.models.architectures")
# factory (section, latent_dim, encoder) -> Prior, with its recipe section (`model.prior:`)
PRIORS: Registry[Callable] = Registry("prior", builtins="textvae.models.priors")
# posterior kind (`model.posterior:`): a class with `stochastic`, `head_outputs` (the encoder head's outputs per
# latent dimension) and `from_head(out, mean_norm)`, the posterior from the head's output; no recipe section
POSTERIORS: Registry[Any] = Registry("posterior", builtins="textvae.models.posteriors")
# Modality (text, images: split loading, counts, metric units, generation), with its `data:` section chosen by
# `format:` (`textvae.modality`)
MODALITIES: Registry = Registry("modality", builtins="textvae.modality")
# DatasetSpec (how `textvae data prepare NAME` fetches, verifies and writes a dataset), registered by
# `textvae.data.prepare.register`
DATASETS: Registry = Registry("dataset", builtins="textvae.data.prepare")
