"""textvae: sentence and document latent-variable models (VAEs and WAEs) with autoregressive decoders."""

__version__ = "0.1.0"
