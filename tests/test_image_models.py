"""Image networks: the gated PixelCNN's autoregressive exactness, normalisation and sampler; the ResNet encoder."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from textvae.models.conv import BernoulliDecoder, ImageDecoder, ResNetEncoder
from textvae.models.pixelcnn import GatedPixelCNN, RasterScan
from textvae.models.posteriors import Deterministic, DiagonalGaussian, PosteriorHead


def spread(module: nn.Module, std: float = 0.5, seed: int = 0) -> nn.Module:
    """Larger random weights (double precision), so tiny models give far-from-uniform, dependent pixels."""
    torch.manual_seed(seed)
    module.double()
    with torch.no_grad():
        for param in module.parameters():
            param.normal_(0.0, std)
    return module


def all_images(height: int, width: int) -> torch.Tensor:
    """Every binary image [2^(HW), 1, H, W], in the order of `image_index`."""
    bits = list(itertools.product([0.0, 1.0], repeat=height * width))
    return torch.tensor(bits, dtype=torch.float64).view(-1, 1, height, width)


def image_index(images: torch.Tensor) -> torch.Tensor:
    flat = images.flatten(1).long()
    weights = 2 ** torch.arange(flat.shape[1] - 1, -1, -1)
    return (flat * weights).sum(1)


def tiny_decoders(latent_dim: int, shape=(1, 2, 2), std: float = 1.0, seed: int = 1) -> list[ImageDecoder]:
    """A 2-layer PixelCNN (and a BernoulliDecoder when latent_dim > 0) whose pixels depend on each other
    strongly (logit shifts of 1-3 when flipping an earlier pixel, with the default std and seed)."""
    decoders: list[ImageDecoder] = [GatedPixelCNN(shape, latent_dim, channels=4, kernels=(3, 3))]
    if latent_dim:
        decoders.append(BernoulliDecoder(shape, latent_dim, hidden=(8,)))
    return [spread(d, std, seed) for d in decoders]


@pytest.mark.parametrize("latent_dim", [0, 2])
def test_pixelcnn_dependencies_are_exactly_the_causal_receptive_field(latent_dim):
    size, kernels = 8, (5, 3, 3)
    model = GatedPixelCNN((1, size, size), latent_dim, channels=8, kernels=kernels).double()
    z = torch.randn(1, latent_dim, dtype=torch.float64) if latent_dim else None
    x = torch.bernoulli(torch.full((1, 1, size, size), 0.5, dtype=torch.float64))
    jac = torch.autograd.functional.jacobian(lambda img: model.logits(img, z), x).view(size, size, size, size)
    reach = sum(k // 2 for k in kernels)
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for i, j in itertools.product(range(size), range(size)):
        above = (rows < i) & (rows >= i - reach) & ((cols - j).abs() <= reach)
        left = (rows == i) & (cols < j) & (cols >= j - reach)
        expected = above | left  # includes the pixels up-right (no blind spot) and the one immediately left
        assert torch.equal(jac[i, j] != 0, expected), (i, j)


@pytest.mark.parametrize("latent_dim", [0, 3])
@pytest.mark.parametrize("shape", [(1, 2, 2), (1, 2, 3)])
def test_decoders_are_normalised(latent_dim, shape):
    images = all_images(*shape[1:])
    for decoder in tiny_decoders(latent_dim, shape):
        z = torch.randn(1, 1, latent_dim, dtype=torch.float64).expand(len(images), 1, -1) if latent_dim else None
        total = decoder.log_prob(images, z).exp().sum()
        assert abs(total.item() - 1.0) < 1e-6, type(decoder).__name__


@pytest.mark.parametrize("latent_dim", [0, 2])
def test_samples_follow_the_model(latent_dim):
    count = 20_000
    images = all_images(2, 2)
    for decoder in tiny_decoders(latent_dim):
        z = torch.randn(1, latent_dim, dtype=torch.float64) if latent_dim else None
        probs = decoder.log_prob(images, None if z is None else z.expand(len(images), 1, -1)).exp().squeeze(1)
        many = None if z is None else z.expand(count, -1)
        draws = decoder.sample(many, n=count, generator=torch.Generator().manual_seed(0))
        assert draws.shape == (count, 1, 2, 2) and set(draws.unique().tolist()) <= {0.0, 1.0}
        freq = torch.bincount(image_index(draws), minlength=16).double() / count
        tolerance = 5 * (probs * (1 - probs) / count).sqrt() + 1e-4
        assert ((freq - probs).abs() <= tolerance).all(), (type(decoder).__name__, freq, probs)


def test_raster_scan_logits_equal_full_canvas_logits():
    model = spread(GatedPixelCNN((1, 7, 6), 3, channels=6, kernels=(5, 3, 3)), std=0.3)
    canvas = torch.bernoulli(torch.full((2, 1, 7, 6), 0.5, dtype=torch.float64))
    z_features = model.z_features(torch.randn(2, 3, dtype=torch.float64))
    full = model.horizontal(canvas, model.feeds(canvas, z_features))
    scan = RasterScan(model, canvas, z_features)
    for row, col in itertools.product(range(7), range(6)):
        torch.testing.assert_close(scan.logit(row, col), full[:, :, row, col])
    with pytest.raises(ValueError, match="raster order"):
        RasterScan(model, canvas, z_features).logit(0, 1)


def test_z_conditions_and_latent_free_model_needs_none():
    torch.manual_seed(0)
    images = torch.bernoulli(torch.full((3, 1, 6, 6), 0.5))
    model = GatedPixelCNN((1, 6, 6), 4, channels=8, kernels=(3, 3))
    first, second = model.logits(images, torch.randn(3, 4)), model.logits(images, torch.randn(3, 4))
    assert (first - second).abs().min() > 0
    plain = GatedPixelCNN((1, 6, 6), 0, channels=8, kernels=(3, 3))
    assert plain.log_prob(images, None).shape == (3, 1)
    assert plain.sample(None, n=2).shape == (2, 1, 6, 6)
    assert torch.equal(plain.mean(None, n=2), plain.mean(None, n=2))  # fixed-generator display sample
    with pytest.raises(ValueError):
        model.logits(images, None)


def test_multichannel_and_even_kernels_are_refused():
    with pytest.raises(ValueError, match="one channel"):
        GatedPixelCNN((3, 8, 8), 2)
    with pytest.raises(ValueError, match="odd"):
        GatedPixelCNN((1, 8, 8), 2, kernels=(4, 3))


@pytest.mark.parametrize(
    ("shape", "channels", "posterior"),
    [
        ((1, 28, 28), (64, 64, 64), "gaussian"),
        ((1, 9, 7), (4, 8), "gaussian"),
        ((1, 28, 28), (8, 8, 8), "deterministic"),
    ],
)
def test_resnet_encoder_posteriors(shape, channels, posterior):
    encoder = ResNetEncoder(shape, channels, latent_dim=5, posterior=posterior)
    assert isinstance(encoder.to_posterior, PosteriorHead)
    q = encoder(torch.rand(3, *shape))
    assert isinstance(q, DiagonalGaussian if posterior == "gaussian" else Deterministic)
    assert q.mean.shape == (3, 5) and q.rsample(2).shape == (3, 2, 5)
    if posterior == "gaussian":
        assert q.logvar.shape == (3, 5)


@pytest.mark.parametrize("kind", ["pixelcnn", "bernoulli"])
def test_log_prob_with_several_samples_matches_one_at_a_time(kind):
    torch.manual_seed(0)
    shape = (1, 5, 4)
    if kind == "pixelcnn":
        decoder: ImageDecoder = GatedPixelCNN(shape, 3, channels=6, kernels=(3, 3))
    else:
        decoder = BernoulliDecoder(shape, 3, hidden=(16,))
    decoder.double()
    images = torch.rand(2, *shape, dtype=torch.float64).round()
    z = torch.randn(2, 4, 3, dtype=torch.float64)
    joint = decoder.log_prob(images, z)
    assert joint.shape == (2, 4)
    single = torch.cat([decoder.log_prob(images, z[:, k : k + 1]) for k in range(4)], dim=1)
    torch.testing.assert_close(joint, single)
    grey = decoder.log_prob(torch.rand(2, *shape, dtype=torch.float64), z)  # grey targets are scored too
    assert torch.isfinite(grey).all() and decoder.pass_floats(images) >= decoder.pass_floats(images, grad=False) > 0


def test_default_pixelcnn_is_he_et_al():
    model = GatedPixelCNN(image_shape=(1, 28, 28), latent_dim=32)
    assert len(model.layers) == 12
    assert tuple(layer.vertical.kernel_size[1] for layer in model.layers) == (9, 9, 9, 7, 7, 7, 5, 5, 5, 3, 3, 3)
    assert all(layer.h_out.out_channels == 32 for layer in model.layers)
    assert model.z_proj is not None and model.z_proj.in_features == 32
    assert model.layers[0].vertical.kernel_size == (4, 9) and model.layers[0].horizontal.kernel_size == (1, 4)
    assert model.layers[1].vertical.kernel_size == (5, 9) and model.layers[1].horizontal.kernel_size == (1, 5)
