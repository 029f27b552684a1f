"""An image model's latent space: prior samples, reconstructions and interpolations, and image grids (PNG).

Factorized (Bernoulli) decoders are shown by their pixel means; PixelCNN decoders draw each image pixel by
pixel with a seeded generator, so the same seed gives the same grid.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from textvae.atomic import write_atomic
from textvae.data.images import ImageSplit
from textvae.evaluation.common import model_device, seeded
from textvae.generation.latent_space import interpolation_path
from textvae.models.base import evaluating


def _generator(model, seed: int) -> torch.Generator:
    return torch.Generator(device=model_device(model)).manual_seed(seed)


@torch.inference_mode()
def decode_images(model, z: torch.Tensor | None, seed: int = 0, n: int | None = None) -> torch.Tensor:
    """Images [N, C, H, W] in [0, 1] from codes z [N, Z] (or n draws of a latent-free PixelCNN)."""
    with evaluating(model):
        if model.decoder.autoregressive:
            return model.decoder.sample(z, n=n, generator=_generator(model, seed)).float()
        return model.decoder.mean(z).float()


def sample_images(model, n: int, seed: int = 0) -> torch.Tensor:
    """n images from z ~ p(z) (or from the PixelCNN alone when the model has no latent)."""
    if not model.has_latent:
        return decode_images(model, None, seed, n=n)
    device = model_device(model)
    with seeded(seed, device), torch.inference_mode():  # the global RNG is left as it was
        z = model.prior.sample(n, device)
    return decode_images(model, z, seed)


@torch.inference_mode()
def encode_images(model, images: torch.Tensor) -> torch.Tensor:
    """Posterior means E[z|x] [N, Z] of images [N, C, H, W]."""
    if not model.has_latent:
        raise TypeError("a model without a latent variable has no latent space to encode into")
    with evaluating(model):
        return model.encode(images.to(model_device(model)), None).mean


def reconstruct_images(model, split: ImageSplit, indices: list[int], seed: int = 0) -> torch.Tensor:
    """Originals and reconstructions from E[z|x], interleaved: [2·len(indices), C, H, W]."""
    originals = split.images(indices).to(model_device(model))
    decoded = decode_images(model, encode_images(model, originals), seed)
    return torch.stack([originals, decoded], dim=1).flatten(0, 1)


def interpolate_images(
    model, split: ImageSplit, pairs: list[tuple[int, int]], steps: int = 8, spherical: bool = False, seed: int = 0
) -> torch.Tensor:
    """One row per pair (a, b) of split indices: a, `steps` decodes from E[z|a] to E[z|b], b; [P·(steps+2), C, H, W]."""
    rows = []
    for a, b in pairs:
        originals = split.images([a, b]).to(model_device(model))
        means = encode_images(model, originals)
        path = interpolation_path(means[0], means[1], steps, spherical)
        rows.append(torch.cat([originals[:1], decode_images(model, path, seed), originals[1:]]))
    return torch.cat(rows)


def image_grid(images: torch.Tensor, columns: int, scale: int = 2, pad: int = 2) -> Image.Image:
    """Tile images [N, C, H, W] (values in [0, 1], ink = 1) into a greyscale PIL image, ink dark on white."""
    images = images.detach().float().cpu().clamp(0, 1).mean(1).numpy()  # [N, H, W]
    n, height, width = images.shape
    rows = -(-n // columns)
    cell_h, cell_w = height + pad, width + pad
    canvas = np.full((rows * cell_h + pad, columns * cell_w + pad), 0.75)
    for i, image in enumerate(images):
        top, left = pad + (i // columns) * cell_h, pad + (i % columns) * cell_w
        canvas[top : top + height, left : left + width] = 1.0 - image
    picture = Image.fromarray(np.round(canvas * 255).astype(np.uint8), mode="L")
    return picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)


def grid_png(images: torch.Tensor, columns: int, scale: int = 2) -> bytes:
    """`image_grid` as PNG bytes."""
    buffer = io.BytesIO()
    image_grid(images, columns, scale).save(buffer, format="PNG")
    return buffer.getvalue()


def save_grid(images: torch.Tensor, path: Path, columns: int, scale: int = 2) -> Path:
    """Write an image grid as PNG (through a temporary file, so a crash leaves no half-written picture)."""
    return write_atomic(path, grid_png(images, columns, scale))
