"""Latent arithmetic (as Optimus, Li et al. 2020): attribute transfer z + mean z(B) − mean z(A), and
analogies z_C + z_B − z_A, decoded from posterior means E[z|x]."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from textvae.errors import TextVAEError
from textvae.evaluation.probe import LabeledTexts

Encoder = Callable[[list[str]], torch.Tensor]  # texts -> posterior means [N, Z]
DEFAULT_PER_LABEL = 1000  # documents of each label averaged (the first ones in file order)


def label_mean(encode: Encoder, labeled: LabeledTexts, label: str, per_label: int = DEFAULT_PER_LABEL) -> torch.Tensor:
    """The mean posterior mean [Z] of the first `per_label` documents labelled `label`."""
    texts = [text for text, y in zip(labeled.texts, labeled.labels) if y == label][:per_label]
    if not texts:
        known = ", ".join(sorted(set(labeled.labels))[:10])
        raise TextVAEError(f"label {label!r}: no document of {labeled.source} has it (labels: {known})")
    return encode(texts).mean(0)


def attribute_vector(
    encode: Encoder, labeled: LabeledTexts, from_label: str, to_label: str, per_label: int = DEFAULT_PER_LABEL
) -> torch.Tensor:
    """mean z(to_label) − mean z(from_label) [Z]."""
    return label_mean(encode, labeled, to_label, per_label) - label_mean(encode, labeled, from_label, per_label)


def shifted_codes(encode: Encoder, texts: Sequence[str], vector: torch.Tensor) -> torch.Tensor:
    """E[z|x] + vector for each text: [N, Z]."""
    return encode(list(texts)) + vector.to(torch.float32)


def analogy_code(encode: Encoder, a: str, b: str, c: str) -> torch.Tensor:
    """z_C + z_B − z_A [1, Z]: C changed as A was changed into B."""
    za, zb, zc = encode([a, b, c])
    return (zc + zb - za).unsqueeze(0)
