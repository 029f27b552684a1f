"""Inference on the posterior beyond the encoder: SVI refinement (Kim et al. 2018)."""

from textvae.inference.svi import Refined, SVITrace, refine, refine_differentiable

__all__ = ["Refined", "SVITrace", "refine", "refine_differentiable"]
