"""Gated PixelCNN decoder (van den Oord et al. 2016) for binary images, conditioned on z as He et al. (2019).

Two stacks without a blind spot. The vertical stack's features at row i see only rows < i of the image
(all columns within reach); the horizontal stack's at (i, j) see row i left of j plus the vertical stack
at (i, j). Masking is done by padding: vertical convs pad the top (never the bottom), horizontal convs
pad the left, so a layer's output at row i never depends on rows below i, nor at column j on columns
right of j. With reach R = sum(k // 2 for k in kernels), the logit of pixel (i, j) depends on exactly
rows i-R..i-1 x columns j-R..j+R and row i x columns j-R..j-1 (the tests check this).

The first layer is type 'A' (vertical rows i-k//2..i-1, horizontal columns j-k//2..j-1), later ones type 'B'
(including the current row / column of the layer below). z is projected linearly to `z_channels` values,
constant over space, and added through unmasked per-layer linear maps (a 1x1 conv of a constant map) to
both stacks' pre-activations.

Sampling uses `RasterScan`, which evaluates the network incrementally in raster order: one new row of the
vertical stack per image row and one new column of the horizontal stack per pixel (as small matrix
products: on CPU a oneDNN convolution call on such tiny inputs costs ~10x a matmul), exactly equal to
the full pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from textvae.models.conv import ImageDecoder, ImageShape


def gate(pre: torch.Tensor) -> torch.Tensor:
    """tanh(a) * sigmoid(b) for pre-activations [N, 2c, ...] split into halves a, b."""
    a, b = pre.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


def pointwise(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 conv on feature maps [N, C, H, W], or the same map on one pixel's features [N, C]."""
    return conv(x) if x.dim() == 4 else F.linear(x, conv.weight.flatten(1), conv.bias)


class GatedLayer(nn.Module):
    """One gated layer: vertical conv (k//2 or k//2+1 rows x k), horizontal conv (1 x k//2 or k//2+1)."""

    def __init__(self, in_channels: int, channels: int, kernel: int, first: bool, z_channels: int) -> None:
        super().__init__()
        self.reach = kernel // 2
        # type 'A' kernels stop short of the current row / column: pad by -1 (crop) at the bottom / right
        self.first, self.crop = first, 1 if first else 0
        self.vertical = nn.Conv2d(in_channels, 2 * channels, (self.reach + 1 - self.crop, kernel))
        self.horizontal = nn.Conv2d(in_channels, 2 * channels, (1, self.reach + 1 - self.crop))
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.h_out = nn.Conv2d(channels, channels, 1)
        self.z_in = nn.Linear(z_channels, 4 * channels) if z_channels else None

    def z_terms(self, z_features: torch.Tensor | None) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """The unmasked z contributions to the vertical and horizontal pre-activations, [N, 2c, 1, 1] each."""
        if self.z_in is None or z_features is None:
            return 0.0, 0.0
        zv, zh = self.z_in(z_features)[:, :, None, None].chunk(2, dim=1)
        return zv, zh

    def vertical_step(
        self, v: torch.Tensor, z_features: torch.Tensor | None, pad_top: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(next vertical features, this layer's feed into the horizontal pre-activation), both [N, *, H', W].
        With the default `pad_top` (the reach) H' = H; less padding drops the first output rows."""
        zv, zh = self.z_terms(z_features)
        pad_top = self.reach if pad_top is None else pad_top
        pre = self.vertical(F.pad(v, (self.reach, self.reach, pad_top, -self.crop)))
        return gate(pre + zv), self.v_to_h(pre) + zh

    def horizontal_step(self, h: torch.Tensor, feed: torch.Tensor) -> torch.Tensor:
        """The next horizontal features [N, c, H, W] from h [N, C_in, H, W] and the vertical feed."""
        return self.gated_output(h, self.horizontal(F.pad(h, (self.reach, -self.crop, 0, 0))) + feed)

    def horizontal_column(self, h_row: torch.Tensor, col: int, feed: torch.Tensor) -> torch.Tensor:
        """`horizontal_step` at one column: h_row [N, C_in, W] (read up to `col`), feed [N, 2c] -> [N, c]."""
        start = col - self.reach
        window = F.pad(h_row[:, :, max(0, start) : col + 1 - self.crop], (max(0, -start), 0))
        pre = F.linear(window.flatten(1), self.horizontal.weight.flatten(1), self.horizontal.bias) + feed
        return self.gated_output(h_row[:, :, col], pre)

    def gated_output(self, h: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
        out = pointwise(self.h_out, gate(pre))
        return out if self.first else h + out


class GatedPixelCNN(ImageDecoder):
    """p(x|z) = prod_ij Bernoulli(x_ij | x_<ij, z); `latent_dim` 0 is the PixelCNN-only baseline (z None)."""

    autoregressive = True

    def __init__(
        self,
        image_shape: ImageShape = (1, 28, 28),
        latent_dim: int = 32,
        channels: int = 32,
        kernels: tuple[int, ...] = (9, 9, 9, 7, 7, 7, 5, 5, 5, 3, 3, 3),
        z_channels: int | None = None,
    ) -> None:
        super().__init__()
        if image_shape[0] != 1:
            raise ValueError(f"GatedPixelCNN models one channel (binary images), not {image_shape[0]}")
        if not kernels or any(k % 2 == 0 for k in kernels) or kernels[0] < 3:
            raise ValueError(f"kernels must be odd sizes, the first at least 3, not {kernels}")
        self.image_shape = tuple(image_shape)
        self.latent_dim = latent_dim
        z_channels = (channels if z_channels is None else z_channels) if latent_dim else 0
        self.z_proj = nn.Linear(latent_dim, z_channels) if latent_dim else None
        self.layers = nn.ModuleList(
            GatedLayer(image_shape[0] if i == 0 else channels, channels, k, i == 0, z_channels)
            for i, k in enumerate(kernels)
        )
        self.out_hidden = nn.Conv2d(channels, channels, 1)
        self.out_logit = nn.Conv2d(channels, 1, 1)

    def z_features(self, z: torch.Tensor | None) -> torch.Tensor | None:
        if self.z_proj is None:
            return None
        if z is None:
            raise ValueError("this GatedPixelCNN is conditioned on z (latent_dim > 0); pass z")
        return self.z_proj(z)

    def feeds(self, images: torch.Tensor, z_features: torch.Tensor | None) -> list[torch.Tensor]:
        """The vertical stack's feed into each horizontal layer; row i depends on rows < i of `images` only."""
        v, out = 2 * images - 1, []  # +-1 pixels, so zero padding differs from both values
        for layer in self.layers:
            v, feed = layer.vertical_step(v, z_features)
            out.append(feed)
        return out

    def horizontal(self, images: torch.Tensor, feeds: list[torch.Tensor]) -> torch.Tensor:
        """Logits from the horizontal stack: images and feeds cropped alike to any rows / leading columns."""
        h = 2 * images - 1
        for layer, feed in zip(self.layers, feeds):
            h = layer.horizontal_step(h, feed)
        return self.head(h)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Final 1x1 convs: horizontal features [N, c, H, W] (or one pixel's [N, c]) -> logits [N, 1, ...]."""
        return pointwise(self.out_logit, F.relu(pointwise(self.out_hidden, F.relu(h))))

    def logits(self, images: torch.Tensor | None, z: torch.Tensor | None) -> torch.Tensor:
        if images is None:
            raise ValueError("GatedPixelCNN is autoregressive: logits need the images")
        return self.horizontal(images, self.feeds(images, self.z_features(z)))

    @torch.no_grad()
    def sample(
        self, z: torch.Tensor | None, n: int | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Ancestral sampling in raster order (`RasterScan`)."""
        count = z.shape[0] if z is not None else n
        if count is None:
            raise ValueError("pass z, or n for a latent-free decoder")
        param = self.out_logit.weight
        canvas = torch.zeros(count, *self.image_shape, dtype=param.dtype, device=param.device)
        scan = RasterScan(self, canvas, self.z_features(z))
        for row in range(self.image_shape[1]):
            for col in range(self.image_shape[2]):
                probs = torch.sigmoid(scan.logit(row, col))
                canvas[:, :, row, col] = torch.bernoulli(probs, generator=generator)
        return canvas

    def mean(self, z: torch.Tensor | None, n: int | None = None) -> torch.Tensor:
        """No closed-form mean: a sample drawn with a fixed generator (seed 0), so the same z shows the same image."""
        device = self.out_logit.weight.device
        return self.sample(z, n, generator=torch.Generator(device).manual_seed(0))

    def pass_floats(self, images: torch.Tensor, grad: bool = True) -> int:
        """Per pixel: with gradients ~10c per layer saved for backward (9.3c measured); without, the L vertical
        feeds (2c each, all held before the horizontal pass) plus ~10c of one layer's temporaries."""
        channels, depth = self.out_logit.in_channels, len(self.layers)
        per_pixel = 10 * channels * depth + 4 * channels if grad else 2 * channels * depth + 10 * channels
        return images[0].numel() * per_pixel


class RasterScan:
    """A GatedPixelCNN evaluated pixel by pixel in raster order over a canvas [N, 1, H, W] that may change
    at and after the next pixel between calls (the sampler writes each pixel as it goes). Each image row
    computes that row of every vertical layer from the `reach + 1` rows of its input ending there, each
    pixel that column of every horizontal layer; nothing further reaches, so the logits equal the full pass."""

    def __init__(self, model: GatedPixelCNN, canvas: torch.Tensor, z_features: torch.Tensor | None) -> None:
        self.model, self.canvas, self.z_features = model, canvas, z_features
        inner = [layer.vertical.in_channels for layer in model.layers[1:]]  # inputs of layers 2..L
        self.vertical = [canvas.new_zeros(canvas.shape[0], c, *canvas.shape[2:]) for c in inner]
        self.horizontal = [canvas.new_zeros(canvas.shape[0], c, canvas.shape[3]) for c in inner]
        self.feeds: list[torch.Tensor] = []
        self.next = (0, 0)

    def logit(self, row: int, col: int) -> torch.Tensor:
        """Logit [N, 1] of pixel (row, col), the pixel after the previous call's."""
        if (row, col) != self.next:
            raise ValueError(f"RasterScan visits pixels in raster order: expected {self.next}, got {(row, col)}")
        width = self.canvas.shape[3]
        self.next = (row, col + 1) if col + 1 < width else (row + 1, 0)
        if col == 0:
            self.feeds = self.row_feeds(row)
        h_row = 2 * self.canvas[:, :, row] - 1
        for i, layer in enumerate(self.model.layers):
            h = layer.horizontal_column(h_row, col, self.feeds[i][:, :, col])
            if i < len(self.horizontal):
                self.horizontal[i][:, :, col] = h
                h_row = self.horizontal[i]
        return self.model.head(h)

    def row_feeds(self, row: int) -> list[torch.Tensor]:
        """Row `row` of each layer's vertical feed, [N, 2c, W]; stores that row of the vertical features."""
        feeds = []
        for i, layer in enumerate(self.model.layers):
            top = max(0, row - layer.reach)
            rows = slice(top, row + 1)
            source = 2 * self.canvas[:, :, rows] - 1 if i == 0 else self.vertical[i - 1][:, :, rows]
            v, feed = layer.vertical_step(source, self.z_features, pad_top=layer.reach - (row - top))
            if i < len(self.vertical):
                self.vertical[i][:, :, row] = v[:, :, 0]
            feeds.append(feed[:, :, 0])
        return feeds
