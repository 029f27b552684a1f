"""CPU throughput of the image VAEs: training images/s (forward + backward) and PixelCNN sampling time.

    python benchmarks/image_networks.py --batch 50 --steps 5

One VAE step = encode a batch of random binary 28x28 images, one reparameterised z per image,
decoder log-likelihood minus KL, backward. Each configuration runs in fp32 and under CPU bf16 autocast;
for bf16 the table also gives the largest |log p(x|z)| difference from fp32 on the same batch and z.
Torch uses os.cpu_count() threads (set OMP_NUM_THREADS to override). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time

import torch

from textvae.models.conv import BernoulliDecoder, ImageDecoder, ResNetEncoder
from textvae.models.pixelcnn import GatedPixelCNN

SHAPE = (1, 28, 28)
LATENT = 32
SCALED = (7, 7, 5, 5, 3, 3)


def configs() -> dict[str, tuple[ResNetEncoder, ImageDecoder]]:
    return {
        "ResNet[64x3] + PixelCNN 12x32 (He et al.)": (ResNetEncoder(SHAPE, (64, 64, 64), LATENT), GatedPixelCNN()),
        "ResNet[32x3] + PixelCNN 6x32 (7,7,5,5,3,3)": (
            ResNetEncoder(SHAPE, (32, 32, 32), LATENT),
            GatedPixelCNN(SHAPE, LATENT, 32, SCALED),
        ),
        "ResNet[32x3] + PixelCNN 6x16 (7,7,5,5,3,3)": (
            ResNetEncoder(SHAPE, (32, 32, 32), LATENT),
            GatedPixelCNN(SHAPE, LATENT, 16, SCALED),
        ),
        "ResNet[64x3] + Bernoulli MLP (512)": (ResNetEncoder(SHAPE, (64, 64, 64), LATENT), BernoulliDecoder()),
    }


def precision(bf16: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def vae_step(encoder: ResNetEncoder, decoder: ImageDecoder, images: torch.Tensor, bf16: bool) -> None:
    with precision(bf16):
        q = encoder(images)
        elbo = decoder.log_prob(images, q.rsample(1)).squeeze(1) - q.kl().sum(-1)
    (-elbo.float().mean()).backward()


def images_per_second(encoder, decoder, images: torch.Tensor, steps: int, bf16: bool) -> float:
    for _ in range(2):  # warm-up: allocator, oneDNN primitive caches
        vae_step(encoder, decoder, images, bf16)
    start = time.perf_counter()
    for _ in range(steps):
        vae_step(encoder, decoder, images, bf16)
    return steps * images.shape[0] / (time.perf_counter() - start)


@torch.no_grad()
def bf16_error(decoder: ImageDecoder, images: torch.Tensor) -> tuple[float, float]:
    """(max |log p(x|z) bf16 - fp32|, mean -log p(x|z) in fp32), nats per image."""
    z = torch.randn(images.shape[0], 1, LATENT)
    exact = decoder.log_prob(images, z)
    with precision(True):
        approx = decoder.log_prob(images, z).float()
    return (approx - exact).abs().max().item(), -exact.mean().item()


def sampling_seconds(decoder: ImageDecoder, count: int) -> float:
    z = torch.randn(count, LATENT)
    start = time.perf_counter()
    decoder.sample(z, generator=torch.Generator().manual_seed(0))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration (after 2 warm-up)")
    parser.add_argument("--samples", type=int, default=16, help="images drawn in the sampling timing")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    torch.manual_seed(0)
    images = torch.bernoulli(torch.full((args.batch, *SHAPE), 0.2))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, {args.steps} steps")
    print(f"{'configuration':46s} {'fp32 img/s':>10s} {'bf16 img/s':>10s} {'bf16 max|dlogp|':>16s} {'-logp':>7s}")
    for name, (encoder, decoder) in configs().items():
        fp32 = images_per_second(encoder, decoder, images, args.steps, bf16=False)
        bf16 = images_per_second(encoder, decoder, images, args.steps, bf16=True)
        error, nll = bf16_error(decoder, images)
        print(f"{name:46s} {fp32:10.1f} {bf16:10.1f} {error:16.3f} {nll:7.1f}", flush=True)
    for name, decoder in [
        ("PixelCNN 6x32", GatedPixelCNN(SHAPE, LATENT, 32, SCALED)),
        ("PixelCNN 12x32", GatedPixelCNN()),
    ]:
        print(f"sampling {args.samples} images, {name}: {sampling_seconds(decoder, args.samples):.2f} s", flush=True)


if __name__ == "__main__":
    main()
