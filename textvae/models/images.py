"""Image architectures (He et al. 2019's OMNIGLOT setting): a ResNet encoder with a gated PixelCNN or a
factorized Bernoulli decoder, and the PixelCNN alone (no latent) as the autoregressive baseline."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pydantic import Field, field_validator
from torch import nn

from textvae.config.sections import ModelSection, Section
from textvae.models.base import architecture
from textvae.models.conv import BernoulliDecoder, ResNetEncoder
from textvae.models.pixelcnn import GatedPixelCNN

if TYPE_CHECKING:
    from textvae.config.recipe import Recipe

PIXEL_VALUES = 2  # the "vocabulary" of binary images (LatentVariableConfig.vocab_size)


class ImageModelConfig(Section):
    """The networks' sizes (`model.image`): ResNet encoder, gated PixelCNN or factorized Bernoulli decoder."""

    image_shape: tuple[int, int, int] = (1, 28, 28)  # channels, height, width
    encoder_channels: list[int] = Field([64, 64, 64], min_length=1)  # one residual stage (stride 2) per entry
    pixelcnn_channels: int = Field(32, gt=0)
    pixelcnn_kernels: list[int] = Field([9, 9, 9, 7, 7, 7, 5, 5, 5, 3, 3, 3], min_length=1)  # one gated layer each
    bernoulli_hidden: list[int] = Field([512, 512], min_length=1)  # the factorized decoder's MLP

    @field_validator("pixelcnn_kernels")
    @classmethod
    def _odd_kernels(cls, kernels: list[int]) -> list[int]:
        if any(k < 1 or k % 2 == 0 for k in kernels):
            raise ValueError(f"kernel sizes must be odd and positive (got {kernels})")
        return kernels


class ImageVAEConfig(ModelSection):
    """An image VAE (model.type pixelcnn_vae or bernoulli_vae), He et al. 2019's OMNIGLOT setting."""

    modality: ClassVar = "images"
    example: ClassVar = {
        "latent_dim": 2,
        "image": {
            "image_shape": [1, 8, 8],
            "encoder_channels": [4],
            "pixelcnn_channels": 4,
            "pixelcnn_kernels": [3],
            "bernoulli_hidden": [8],
        },
    }

    image: ImageModelConfig = ImageModelConfig()

    def check(self, recipe: Recipe) -> None:
        super().check(recipe)
        if recipe.train.posterior_mean_plot is not None:
            raise ValueError("train.posterior_mean_plot integrates over token sequences: text models only")


class PixelCNNLanguageModelConfig(ImageVAEConfig):
    """The gated PixelCNN alone (model.type pixelcnn_lm, no latent): the autoregressive baseline."""

    has_latent: ClassVar = False


def _encoder(cfg) -> ResNetEncoder:
    image = cfg.section.image
    return ResNetEncoder(tuple(image.image_shape), tuple(image.encoder_channels), cfg.latent_dim, cfg.posterior)


def _pixelcnn(cfg, latent_dim: int) -> GatedPixelCNN:
    image = cfg.section.image
    return GatedPixelCNN(tuple(image.image_shape), latent_dim, image.pixelcnn_channels, tuple(image.pixelcnn_kernels))


@architecture("pixelcnn_vae", config=ImageVAEConfig)
def _pixelcnn_vae(cfg) -> tuple[nn.Module, nn.Module]:
    return _encoder(cfg), _pixelcnn(cfg, cfg.latent_dim)


@architecture("pixelcnn_lm", config=PixelCNNLanguageModelConfig)
def _pixelcnn_lm(cfg) -> tuple[None, nn.Module]:
    return None, _pixelcnn(cfg, 0)


@architecture("bernoulli_vae", config=ImageVAEConfig)
def _bernoulli_vae(cfg) -> tuple[nn.Module, nn.Module]:
    image = cfg.section.image
    decoder = BernoulliDecoder(tuple(image.image_shape), cfg.latent_dim, tuple(image.bernoulli_hidden))
    return _encoder(cfg), decoder
