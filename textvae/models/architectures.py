"""The built-in architectures: importing their modules registers each builder with its `model:` section."""

from textvae.models import huggingface, images, lstm, transformer  # noqa: F401
