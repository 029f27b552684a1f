"""Binary image data (MNIST, OMNIGLOT): prepared `.npz` splits, binarisation and batches.

A prepared split is an npz with `images` uint8 [N, H, W] or [N, C, H, W] (0 = background, 255 = ink;
a grey value is 255 x the probability of ink) and, where known, `labels` [N]. `ImageSplit` serves it
to a DataLoader with one of three binarisations:

- "dynamic": every batch draws x ~ Bernoulli(pixel / 255) afresh with torch's global RNG (training,
  as in Burda et al. 2016);
- "fixed": binarised once, with numpy `default_rng(seed)` over the whole split (evaluation: the same
  images every time);
- "none": the grey values pixel / 255.

Files are read with `allow_pickle=False` only. Also here: the IDX reader (original MNIST files) and
the resizing used by the preparers (`textvae.data.prepare`).
"""

from __future__ import annotations

import copy
import hashlib
import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from textvae.atomic import write_atomic
from textvae.errors import TextVAEError

BINARIZATIONS = ("dynamic", "fixed", "none")
IMAGE_NDIMS = (3, 4)  # [N, H, W] or [N, C, H, W]
IDX_UINT8 = 0x08


@dataclass
class ImageBatch:
    """Images [B, C, H, W] as float32 in [0, 1] (exactly {0, 1} once binarised) and their split positions."""

    modality: ClassVar[str] = "images"

    images: torch.Tensor
    index: torch.Tensor  # long [B], position of each image in its split

    @property
    def data(self) -> torch.Tensor:
        """The model input (TextBatch.data's counterpart)."""
        return self.images

    @property
    def lengths(self) -> None:
        """Images have no lengths."""
        return None

    @property
    def n_predicted(self) -> int:
        """Pixels predicted: B * C * H * W."""
        return self.images.numel()

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device | str) -> ImageBatch:
        return ImageBatch(self.images.to(device), self.index.to(device))


def _check_pixels(pixels: np.ndarray, where: str) -> None:
    if pixels.dtype != np.uint8 or pixels.ndim not in IMAGE_NDIMS:
        raise TextVAEError(f"{where}: images must be uint8 [N,H,W] or [N,C,H,W], got {pixels.dtype} {pixels.shape}")
    if pixels.size == 0:
        raise TextVAEError(f"{where}: no images (shape {pixels.shape})")


class ImageSplit(Dataset[tuple[int, np.ndarray]]):
    """One split of images; `collate` (the DataLoader's collate_fn) binarises as configured."""

    def __init__(self, pixels: np.ndarray, binarization: str = "dynamic", seed: int = 0) -> None:
        if binarization not in BINARIZATIONS:
            raise TextVAEError(f"binarization {binarization!r}: expected one of {', '.join(BINARIZATIONS)}")
        pixels = np.asarray(pixels)
        _check_pixels(pixels, "ImageSplit")
        if pixels.ndim == 3:
            pixels = pixels[:, None]
        if binarization == "fixed":  # stored as 0 / 255, so __getitem__ keeps meaning "255 x P(ink)"
            rng = np.random.default_rng(seed)
            ink = rng.random(pixels.shape, dtype=np.float32) < pixels / np.float32(255)
            pixels = ink.astype(np.uint8) * np.uint8(255)
        self._pixels = pixels
        self.binarization = binarization
        self.seed = seed

    def __len__(self) -> int:
        return self._pixels.shape[0]

    def __getitem__(self, i: int) -> tuple[int, np.ndarray]:
        """(i, uint8 [C, H, W]): 255 x the probability of ink (0 or 255 after fixed binarisation)."""
        return i, self._pixels[i]

    def fingerprint(self) -> str:
        """A digest of the pixels (a resumed run checks it trains on the same data)."""
        return hashlib.sha256(np.ascontiguousarray(self._pixels).tobytes()).hexdigest()

    @property
    def random_collate(self) -> bool:
        """Whether `collate` draws random numbers (dynamic binarisation): then it runs on the training thread."""
        return self.binarization == "dynamic"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        c, h, w = self._pixels.shape[1:]
        return c, h, w

    @property
    def lengths(self) -> list[int]:
        """C * H * W for every image: a length-bucketing sampler degenerates to a plain shuffle."""
        return [int(np.prod(self.image_shape))] * len(self)

    @property
    def n_tokens(self) -> int:
        """Pixels in the split: N * C * H * W."""
        return int(self._pixels.size)

    def _to_images(self, pixels: np.ndarray) -> torch.Tensor:
        probs = torch.from_numpy(pixels).float().div_(255)
        return torch.bernoulli(probs) if self.binarization == "dynamic" else probs

    def collate(self, examples: Sequence[tuple[int, np.ndarray]]) -> ImageBatch:
        """(index, pixels) pairs -> ImageBatch (dynamic binarisation draws here)."""
        index = torch.tensor([i for i, _ in examples], dtype=torch.long)
        return ImageBatch(self._to_images(np.stack([p for _, p in examples])), index)

    def images(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
        """Float [k, C, H, W] of the images at `indices`, as `collate` would give them."""
        return self._to_images(self._pixels[np.asarray(indices, dtype=np.int64)])

    def subset(self, n: int) -> ImageSplit:
        """The first n images, with the same (fixed) binarisation."""
        part = copy.copy(self)
        part._pixels = self._pixels[:n]
        return part


def _dtype_ok(array: np.ndarray, want: str) -> bool:
    return array.dtype.kind in "iu" if want == "int" else array.dtype == np.dtype(want)


def read_npz(
    source: str | Path | bytes, expected: dict[str, tuple[str, tuple[int, ...]]], where: str | None = None
) -> dict[str, np.ndarray]:
    """Arrays of an npz file (or its bytes), never unpickled, each checked against (dtype, allowed ndims).

    dtype is a numpy name or "int" (any integer type). Raises TextVAEError naming `where` (default: the path)
    for a missing file, a file that is not an npz, a missing key, a wrong dtype or ndim, an empty array.
    """
    where = where or str(source)
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise TextVAEError(f"{where}: file not found")
    try:
        npz = np.load(io.BytesIO(source) if isinstance(source, bytes) else source, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise TextVAEError(f"{where}: not a numpy .npz archive ({err})") from err
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise TextVAEError(f"{where}: a single .npy array, expected an .npz archive with {', '.join(expected)}")
    arrays = {}
    with npz:
        for key, (dtype, ndims) in expected.items():
            if key not in npz.files:
                raise TextVAEError(f"{where}: no array {key!r} (has: {', '.join(npz.files) or 'none'})")
            try:
                array = npz[key]
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
                raise TextVAEError(f"{where}: cannot read {key!r} ({err})") from err
            if not _dtype_ok(array, dtype):
                raise TextVAEError(f"{where}: {key!r} is {array.dtype}, expected {dtype}")
            if array.ndim not in ndims:
                allowed = " or ".join(map(str, ndims))
                raise TextVAEError(f"{where}: {key!r} has {array.ndim} dimensions {array.shape}, expected {allowed}")
            if array.size == 0:
                raise TextVAEError(f"{where}: {key!r} is empty (shape {array.shape})")
            arrays[key] = array
    return arrays


def load_image_split(path: str | Path, binarization: str, seed: int = 0, limit: int | None = None) -> ImageSplit:
    """A prepared split (npz with `images` uint8 [N,H,W] or [N,C,H,W]); `limit` keeps the first images.

    With "fixed" binarisation the whole file is binarised before `limit` applies, so a limited split
    holds the same images as the start of the full one.
    """
    pixels = read_npz(path, {"images": ("uint8", IMAGE_NDIMS)})["images"]
    split = ImageSplit(pixels, binarization, seed)
    return split if limit is None else split.subset(limit)


def save_image_split(path: str | Path, images: np.ndarray, labels: np.ndarray | None = None) -> Path:
    """Write `images` (uint8 [N,H,W] or [N,C,H,W]) and `labels` ([N], stored int64) with np.savez_compressed.

    Atomic: written to a hidden temporary file beside `path`, then renamed. Identical arrays give identical bytes.
    """
    path = Path(path)
    _check_pixels(np.asarray(images), str(path))
    arrays = {"images": np.asarray(images)}
    if labels is not None:
        if len(labels) != len(images):
            raise TextVAEError(f"{path}: {len(labels)} labels for {len(images)} images")
        arrays["labels"] = np.asarray(labels, dtype=np.int64)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return write_atomic(path, buffer.getvalue())


def parse_idx(data: bytes, where: str) -> np.ndarray:
    """An array from the bytes of an (uncompressed) IDX file of unsigned bytes, like the original MNIST files."""
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != IDX_UINT8:
        raise TextVAEError(f"{where}: not an IDX file of unsigned bytes (header {data[:4].hex()})")
    offset = 4 + 4 * data[3]
    if len(data) < offset:
        raise TextVAEError(f"{where}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=data[3], offset=4))
    if len(data) != offset + int(np.prod(shape)):
        raise TextVAEError(f"{where}: {len(data) - offset} data bytes, the header says shape {shape}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 [N, H, W] -> uint8 [N, size, size] by area averaging (PIL BOX: each pixel = mean of its source area)."""
    out = np.empty((len(images), size, size), dtype=np.uint8)
    for i, image in enumerate(images):
        out[i] = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BOX))
    return out
