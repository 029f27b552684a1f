"""Image architectures (He et al. 2019's OMNIGLOT setting): a ResNet encoder with a gated PixelCNN or a
factorized Bernoulli decoder, and the PixelCNN alone (no latent) as the autoregressive baseline."""

from __future__ import annotations

from torch import nn

from textvae.models.base import architecture
from textvae.models.conv import BernoulliDecoder, ResNetEncoder
from textvae.models.pixelcnn import GatedPixelCNN

PIXEL_VALUES = 2  # the "vocabulary" of binary images (LatentVariableConfig.vocab_size)


def _encoder(cfg) -> ResNetEncoder:
    image = cfg.section.image
    return ResNetEncoder(tuple(image.image_shape), tuple(image.encoder_channels), cfg.latent_dim, cfg.posterior)


def _pixelcnn(cfg, latent_dim: int) -> GatedPixelCNN:
    image = cfg.section.image
    return GatedPixelCNN(tuple(image.image_shape), latent_dim, image.pixelcnn_channels, tuple(image.pixelcnn_kernels))


@architecture("pixelcnn_vae")
def _pixelcnn_vae(cfg) -> tuple[nn.Module, nn.Module]:
    return _encoder(cfg), _pixelcnn(cfg, cfg.latent_dim)


@architecture("pixelcnn_lm")
def _pixelcnn_lm(cfg) -> tuple[None, nn.Module]:
    return None, _pixelcnn(cfg, 0)


@architecture("bernoulli_vae")
def _bernoulli_vae(cfg) -> tuple[nn.Module, nn.Module]:
    image = cfg.section.image
    decoder = BernoulliDecoder(tuple(image.image_shape), cfg.latent_dim, tuple(image.bernoulli_hidden))
    return _encoder(cfg), decoder
