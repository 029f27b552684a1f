"""What the rest of the package calls on an architecture's networks, as protocols: the model, the objectives,
evaluation, SA-VAE, the priors and generation rely on these and on nothing else. A builder registered with
`@architecture` returns an `Encoder` (None for a language model) and a `Decoder`; text architectures give a
`TextEncoder` and a `TextDecoder` (`textvae.models.base.TokenDecoder` implements the decoder's scoring),
image architectures an `Encoder` and an `ImageDecoder` (`textvae.models.conv.ImageDecoder`)."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from textvae.models.posteriors import Posterior, PosteriorHead


@runtime_checkable
class Encoder(Protocol):
    """q(z|x). `encoder(x, lengths)` gives the posterior of each document or image (the model's `encode`, every
    objective and evaluation); its last layer is `to_posterior`, a `PosteriorHead`, whose means BN-VAE
    (`model.mean_batchnorm`) batch-normalises."""

    to_posterior: PosteriorHead

    def __call__(self, inputs: torch.Tensor, lengths: torch.Tensor) -> Posterior: ...


@runtime_checkable
class TextEncoder(Encoder, Protocol):
    """A text encoder also reads input embeddings [B, T, embedding_dim] in place of token ids: the VampPrior's
    learned pseudo-documents are soft embeddings fed to `embedded(embeddings, lengths)`."""

    embedding_dim: int

    def embedded(self, embeddings: torch.Tensor, lengths: torch.Tensor) -> Posterior: ...


@runtime_checkable
class Decoder(Protocol):
    """p(x|z). `log_prob(x, z)` scores x [B, ...] under z [B, n, Z] (None for a language model) as [B, n]: the
    reconstruction term of every objective, IW-NLL, SA-VAE's SVI steps. `latent_dim` is 0 without a latent."""

    latent_dim: int

    def log_prob(self, x: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor: ...


@runtime_checkable
class TextDecoder(Decoder, Protocol):
    """Autoregressive over token ids, for decoding (sampling, greedy, beam search, interpolation):
    `logits(inputs [N, t], z [N, Z], state)` gives the next-token logits [N, t, V] and the state that carries
    what was fed, and `reorder_state(state, index)` keeps the rows a beam continues. The model sets
    `word_dropout` (Bowman et al.'s, in training) from the recipe."""

    word_dropout: float

    def logits(self, inputs: torch.Tensor, z: torch.Tensor | None, state: Any = None) -> tuple[torch.Tensor, Any]: ...

    def reorder_state(self, state: Any, index: torch.Tensor) -> Any: ...


@runtime_checkable
class ImageDecoder(Decoder, Protocol):
    """Over binary images: `sample(z, n)` draws images and `mean(z, n)` gives the ones to display (image grids,
    interpolations); `pass_floats(images)` sizes the batches of importance-weighted evaluation."""

    def sample(self, z: torch.Tensor | None, n: int | None = None, generator: Any = None) -> torch.Tensor: ...

    def mean(self, z: torch.Tensor | None, n: int | None = None) -> torch.Tensor: ...

    def pass_floats(self, images: torch.Tensor, grad: bool = True) -> int: ...
