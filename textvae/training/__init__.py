"""Training: the loop, checkpoints and the update rules (importing a rule's module registers it)."""

from textvae.training import aggressive, semi_amortized  # noqa: F401
