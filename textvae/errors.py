"""User-facing errors: one readable line, no traceback (unless TEXTVAE_DEBUG=1)."""


class TextVAEError(Exception):
    """An error caused by the user's input (file, recipe, run directory), reported as one line."""
