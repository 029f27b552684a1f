"""The built-in update rules: importing their modules registers them (the `update:` registry's builtins)."""

from textvae.training import aggressive, semi_amortized, updates  # noqa: F401
