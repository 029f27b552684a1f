"""Convolutional networks for binary images: He et al. (2019)'s ResNet encoder and the image-decoder contract.

`ImageDecoder` is the image counterpart of `TokenDecoder`: Bernoulli logits per pixel, `log_prob` summed
over pixels. `BernoulliDecoder` is Kingma & Welling's factorised decoder; `textvae.models.pixelcnn` has
the autoregressive one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from textvae.models.posteriors import Posterior, PosteriorHead

ImageShape = tuple[int, int, int]


class ResidualBlock(nn.Module):
    """Two 3x3 convs with batch norm and ELU; a strided 1x1 conv shortcut when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.elu(self.bn1(self.conv1(x)))
        return F.elu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetEncoder(nn.Module):
    """q(z|x) for images [B, C, H, W] in [0, 1]: one residual block per entry of `channels`, each halving
    the resolution (28 -> 14 -> 7 -> 4), then flatten -> `to_posterior` (He et al.'s OMNIGLOT encoder)."""

    def __init__(
        self,
        image_shape: ImageShape = (1, 28, 28),
        channels: tuple[int, ...] = (64, 64, 64),
        latent_dim: int = 32,
        posterior: str = "gaussian",
    ) -> None:
        super().__init__()
        blocks, in_channels, height, width = [], image_shape[0], image_shape[1], image_shape[2]
        for out_channels in channels:
            blocks.append(ResidualBlock(in_channels, out_channels, stride=2))
            in_channels, height, width = out_channels, (height + 1) // 2, (width + 1) // 2
        self.blocks = nn.Sequential(*blocks)
        self.to_posterior = PosteriorHead(in_channels * height * width, latent_dim, posterior, bias=True)

    def forward(self, images: torch.Tensor, lengths: torch.Tensor | None = None) -> Posterior:
        return self.to_posterior(self.blocks(images).flatten(1))


def bernoulli_log_prob(logits: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """log Bernoulli(images; sigmoid(logits)) per pixel, = -binary_cross_entropy_with_logits; broadcasts,
    and takes grey targets in [0, 1] too."""
    return images * logits - F.softplus(logits)


class ImageDecoder(nn.Module):
    """p(x|z) over binary images, one Bernoulli logit per pixel. Subclasses implement `logits`, `sample`,
    `mean` and `pass_floats`; `autoregressive` decoders read the images in `logits`, the others get None."""

    latent_dim: int
    image_shape: ImageShape
    autoregressive: bool = False

    def logits(self, images: torch.Tensor | None, z: torch.Tensor | None) -> torch.Tensor:
        """Bernoulli logits [N, C, H, W] for images [N, C, H, W] (None if not autoregressive), z [N, Z] | None."""
        raise NotImplementedError

    def log_prob(self, images: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """log p(x|z) summed over pixels. images [B, C, H, W]; z [B, n, Z] -> [B, n] (or None -> [B, 1])."""
        batch = images.shape[0]
        n = 1 if z is None else z.shape[1]
        flat_z = None if z is None else z.reshape(batch * n, -1)
        inputs = None
        if self.autoregressive:
            inputs = images.repeat_interleave(n, dim=0) if n > 1 else images
        logits = self.logits(inputs, flat_z)
        logits = logits.view(batch, n, *logits.shape[1:]).to(images.dtype)  # bf16 autocast: sum in full precision
        return bernoulli_log_prob(logits, images.unsqueeze(1)).flatten(2).sum(-1)

    def sample(
        self, z: torch.Tensor | None, n: int | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Binary images [N, C, H, W] (floats in {0, 1}) for z [N, Z], or n of them when z is None."""
        raise NotImplementedError

    def mean(self, z: torch.Tensor | None, n: int | None = None) -> torch.Tensor:
        """Images [N, C, H, W] to display for z [N, Z] (or n of them when z is None)."""
        raise NotImplementedError

    def pass_floats(self, images: torch.Tensor, grad: bool = True) -> int:
        """Approximate activation floats held per (image, z sample) in one `log_prob` pass, with gradients
        (saved for backward) or without (`grad=False`: the peak of live temporaries, as in IW-NLL)."""
        raise NotImplementedError


class BernoulliDecoder(ImageDecoder):
    """Kingma & Welling's factorised decoder: z -> ReLU MLP -> one independent Bernoulli logit per pixel."""

    def __init__(self, image_shape: ImageShape = (1, 28, 28), latent_dim: int = 32, hidden: tuple[int, ...] = (512,)):
        super().__init__()
        if latent_dim < 1:
            raise ValueError("a factorised decoder needs a latent variable (latent_dim >= 1)")
        self.latent_dim = latent_dim
        self.image_shape = tuple(image_shape)
        layers: list[nn.Module] = []
        width = latent_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, image_shape[0] * image_shape[1] * image_shape[2]))
        self.net = nn.Sequential(*layers)
        self.hidden = tuple(hidden)

    def logits(self, images: torch.Tensor | None, z: torch.Tensor | None) -> torch.Tensor:
        if z is None:
            raise ValueError("BernoulliDecoder needs z")
        return self.net(z).view(-1, *self.image_shape)

    def mean(self, z: torch.Tensor | None, n: int | None = None) -> torch.Tensor:
        return torch.sigmoid(self.logits(None, z))

    @torch.no_grad()
    def sample(
        self, z: torch.Tensor | None, n: int | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return torch.bernoulli(self.mean(z), generator=generator)

    def pass_floats(self, images: torch.Tensor, grad: bool = True) -> int:
        hidden = 2 * (sum(self.hidden) if grad else max(self.hidden, default=0))  # pre/post ReLU
        return hidden + 3 * images[0].numel()  # logits, broadcast product, softplus
