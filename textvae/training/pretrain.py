"""Li et al. 2019's restart after pretraining: keep the pretrained encoder, re-initialise the decoder."""

from __future__ import annotations

import torch

DECODER_PREFIX = "decoder."  # the decoder's parameters and buffers (with the bag-of-words head, if any)


def reset_parts(pretrained: torch.nn.Module, fresh: torch.nn.Module, reset: str) -> torch.nn.Module:
    """`pretrained` with its decoder's weights replaced by `fresh`'s (`reset: decoder`) or as it is (`none`).

    `fresh` is the same architecture newly initialised; encoder, posterior head and prior stay pretrained.
    """
    if reset == "decoder":
        weights = pretrained.state_dict()
        weights.update({k: v for k, v in fresh.state_dict().items() if k.startswith(DECODER_PREFIX)})
        pretrained.load_state_dict(weights)
    return pretrained
