"""The image datasets of `textvae data prepare`: MNIST and OMNIGLOT, written as train/valid/test.npz.

Registered with `textvae.data.prepare.register` (imported at the end of that module).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from textvae.data.images import parse_idx, read_npz, resize_images
from textvae.data.prepare import Built, Downloads, ImageOutput, register
from textvae.errors import TextVAEError

MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST_REFERENCE = "the original MNIST IDX files (LeCun et al.), PyTorch's mirror " + MNIST_URL
OMNIGLOT_COMMIT = "b0481240b7eb42393285a93ce7d2f266ff10c62b"
OMNIGLOT_URL = f"https://raw.githubusercontent.com/bitsandscraps/omniglot/{OMNIGLOT_COMMIT}/"
OMNIGLOT_REFERENCE = f"Lake et al.'s Omniglot as npz, github.com/bitsandscraps/omniglot commit {OMNIGLOT_COMMIT}"
CHARDATA_URL = "https://github.com/yburda/iwae/raw/master/datasets/OMNIGLOT/chardata.mat"

IMAGE_SIZE = 28
SPLIT_SEED = 0  # numpy default_rng seed of the held-out validation images
MNIST_VALID = 5_000
MNIST_IDX = {  # npz key -> IDX file
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
OMNIGLOT_FILES = ("images_background.npz", "images_evaluation.npz")
OMNIGLOT_VALID = 1_345
OMNIGLOT_DRAWERS = 20
OMNIGLOT_TRAIN_DRAWERS = 15


def _hold_out(n: int, k: int, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Positions (kept, held out) of a seeded random k of n items, both in their original order."""
    held = np.zeros(n, dtype=bool)
    held[np.random.default_rng(seed).permutation(n)[:k]] = True
    return np.flatnonzero(~held), np.flatnonzero(held)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise TextVAEError(message)


@register(
    "mnist",
    f"MNIST digits, 28x28 grey (for dynamic binarisation): 55k train / {MNIST_VALID // 1000}k valid / 10k test",
    family="mnist",
    images=True,
    inputs=tuple(MNIST_IDX.values()),
    preferred=(("mnist_uint8.npz",),),
    remote=Downloads(tuple((name, f"{MNIST_URL}{name}.gz") for name in MNIST_IDX.values()), MNIST_REFERENCE),
    notes=(
        f"train.npz = the official training images except the last {MNIST_VALID:,}, valid.npz = those last "
        f"{MNIST_VALID:,}, test.npz = the official 10,000 test images; pixels as released (0 = background, "
        "255 = ink), labels = digits",
        "mnist_uint8.npz (../shared/data/mnist) and the official IDX files hold the same arrays: IDX files "
        "written from the npz have the official files' sha256s (KNOWN_DIGESTS)",
    ),
    hint="pass a folder with mnist_uint8.npz or the four IDX files (plain or .gz)",
)
def _mnist(files: dict[str, bytes]) -> dict[str, ImageOutput]:
    if "mnist_uint8.npz" in files:
        image, label = ("uint8", (3,)), ("int", (1,))
        expected = {"x_train": image, "y_train": label, "x_test": image, "y_test": label}
        arrays = read_npz(files["mnist_uint8.npz"], expected, where="mnist_uint8.npz")
        names = {key: f"mnist_uint8.npz {key}" for key in MNIST_IDX}
    else:
        arrays = {key: parse_idx(files[name], name) for key, name in MNIST_IDX.items()}
        names = MNIST_IDX
    x_train, y_train, x_test, y_test = (arrays[key] for key in MNIST_IDX)
    for x, y in ((x_train, y_train), (x_test, y_test)):
        _check(x.ndim == 3 and y.ndim == 1 and len(x) == len(y), f"mnist: images {x.shape} and labels {y.shape}")
    _check(len(x_train) > MNIST_VALID, f"mnist: {len(x_train)} training images, needs more than {MNIST_VALID:,}")
    n = len(x_train) - MNIST_VALID
    return {
        "train.npz": ImageOutput(x_train[:n], y_train[:n], f"{names['x_train']} images 1-{n:,}"),
        "valid.npz": ImageOutput(x_train[n:], y_train[n:], f"{names['x_train']} images {n + 1:,}-{len(x_train):,}"),
        "test.npz": ImageOutput(x_test, y_test, names["x_test"]),
    }


OMNIGLOT_VALID_NOTE = (
    f"valid.npz = {OMNIGLOT_VALID:,} training images drawn with numpy default_rng({SPLIT_SEED}), train.npz = the "
    "others, both in source order (He et al. 2019 hold out a validation set of the training data; we hold out "
    "1,345, the size Tomczak & Welling's vae_vampprior uses, which takes the last 1,345 instead)"
)
LAKE_WARNING = (
    "this is NOT Burda et al.'s 28x28 OMNIGLOT benchmark (chardata.mat): the images are resized from Lake et al.'s "
    "105x105 originals and split by drawer, so likelihoods are not comparable with published OMNIGLOT numbers; "
    f"for the benchmark pass --from a folder holding chardata.mat ({CHARDATA_URL})"
)


def _omniglot_splits(
    pool: np.ndarray, pool_labels: np.ndarray | None, pool_name: str, test: ImageOutput
) -> dict[str, ImageOutput]:
    """train / valid (a seeded random OMNIGLOT_VALID of the training pool) / test outputs."""
    _check(len(pool) > OMNIGLOT_VALID, f"omniglot: {len(pool)} training images, needs more than {OMNIGLOT_VALID:,}")
    keep, valid = _hold_out(len(pool), OMNIGLOT_VALID)
    train_valid = {
        f"{split}.npz": ImageOutput(pool[idx], None if pool_labels is None else pool_labels[idx], f"{pool_name}, {how}")
        for split, idx, how in (("train", keep, f"{len(keep):,} kept"), ("valid", valid, f"{len(valid):,} held out"))
    }
    return {**train_valid, "test.npz": test}


def _chardata_images(mat: dict[str, Any], key: str) -> np.ndarray:
    """uint8 [N, 28, 28] from chardata.mat's [784, N] grey columns, each flattened in Fortran order (IWAE)."""
    data = mat.get(key)
    pixels = IMAGE_SIZE * IMAGE_SIZE
    ok = isinstance(data, np.ndarray) and data.ndim == 2 and data.shape[0] == pixels and data.dtype.kind in "fiub"
    _check(ok, f"chardata.mat: {key!r} must be a [{pixels}, N] array, found {getattr(data, 'shape', None)}")
    grey = np.asarray(data, dtype=np.float64)
    _check(bool(np.all((grey >= 0) & (grey <= 1))), f"chardata.mat: {key!r} has values outside [0, 1]")
    images = grey.T.reshape(-1, IMAGE_SIZE, IMAGE_SIZE).transpose(0, 2, 1)
    return np.rint(images * 255).astype(np.uint8)


def _chardata_labels(mat: dict[str, Any], key: str, n: int) -> np.ndarray | None:
    """Alphabet of each image (argmax of the one-hot `target` [n_alphabets, N]), where the file has it."""
    target = mat.get(key)
    if isinstance(target, np.ndarray) and target.ndim == 2 and target.shape[1] == n:
        return target.argmax(axis=0)
    return None


def _omniglot_burda(data: bytes) -> Built:
    try:
        from scipy.io import loadmat
        from scipy.io.matlab import MatReadError
    except ImportError as err:
        raise TextVAEError("reading chardata.mat needs scipy: pip install scipy") from err
    try:
        mat = loadmat(io.BytesIO(data))
    except (MatReadError, ValueError, OSError, TypeError, NotImplementedError) as err:
        raise TextVAEError(f"chardata.mat: cannot read it as a MATLAB file ({err})") from err
    train, test = _chardata_images(mat, "data"), _chardata_images(mat, "testdata")
    test_output = ImageOutput(test, _chardata_labels(mat, "testtarget", len(test)), "chardata.mat testdata")
    outputs = _omniglot_splits(train, _chardata_labels(mat, "target", len(train)), "chardata.mat data", test_output)
    notes = (
        "Burda et al.'s 28x28 OMNIGLOT (chardata.mat, 24,345 train / 8,070 test): each column of `data` / `testdata` "
        "is an image flattened in Fortran order (IWAE's reshape_data), so images = "
        "data.T.reshape(-1, 28, 28).transpose(0, 2, 1); pixels = round(255 x grey)",
        OMNIGLOT_VALID_NOTE,
        "labels = alphabet index (argmax of `target` / `testtarget`), absent where the file has no targets",
    )
    return Built(outputs, notes)


def _lake_characters(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [chars, 20, 28, 28] with 255 = ink, labels [chars, 20]) from one of Lake et al.'s npz files."""
    arrays = read_npz(data, {"images": ("bool", (4,)), "labels": ("int", (2,))}, where=name)
    images, labels = arrays["images"], arrays["labels"]
    ok = images.shape[1] == OMNIGLOT_DRAWERS and labels.shape == images.shape[:2]
    _check(ok, f"{name}: images {images.shape} and labels {labels.shape}, expected [chars, 20, H, W] and [chars, 20]")
    out = np.empty((*labels.shape, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for c, character in enumerate(images):  # True = white background: invert
        out[c] = resize_images(np.where(character, np.uint8(0), np.uint8(255)), IMAGE_SIZE)
    return out, labels


def _omniglot_lake(files: dict[str, bytes]) -> Built:
    parts = [_lake_characters(files[name], name) for name in OMNIGLOT_FILES]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([parts[0][1], parts[1][1] + len(parts[0][1])])  # evaluation characters after background
    d = OMNIGLOT_TRAIN_DRAWERS
    test = images[:, d:].reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    test_output = ImageOutput(test, labels[:, d:].reshape(-1), f"drawers {d}-{OMNIGLOT_DRAWERS - 1} of every character")
    pool = images[:, :d].reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    outputs = _omniglot_splits(pool, labels[:, :d].reshape(-1), f"drawers 0-{d - 1} of every character", test_output)
    notes = (
        "Lake et al.'s 105x105 binary images (images_background.npz, then images_evaluation.npz), inverted "
        "(255 = ink) and resized to 28x28 grey by area averaging (PIL Image.resize, Resampling.BOX): each pixel is "
        "255 x the ink fraction of its 3.75 x 3.75 source area",
        f"drawers 0-{d - 1} of all characters (drawer k = Lake's file name suffix k+1; character-major order) are the "
        f"training pool (1,623 x {d} = 24,345, as many as Burda's training set); drawers {d}-{OMNIGLOT_DRAWERS - 1} "
        "are test.npz (8,115; Burda's has 8,070)",
        OMNIGLOT_VALID_NOTE,
        "labels = character index 0-1622 (background characters first)",
    )
    return Built(outputs, notes, warnings=(LAKE_WARNING,))


@register(
    "omniglot",
    "OMNIGLOT 28x28: Burda et al.'s chardata.mat if given (23,000/1,345/8,070), else resized from Lake et al.'s "
    "originals (23,000/1,345/8,115; NOT the benchmark)",
    family="omniglot",
    images=True,
    inputs=OMNIGLOT_FILES,
    preferred=(("chardata.mat",),),
    remote=Downloads(tuple((name, f"{OMNIGLOT_URL}{name}") for name in OMNIGLOT_FILES), OMNIGLOT_REFERENCE),
    hint=f"Burda et al.'s benchmark file chardata.mat is at {CHARDATA_URL}",
)
def _omniglot(files: dict[str, bytes]) -> Built:
    return _omniglot_burda(files["chardata.mat"]) if "chardata.mat" in files else _omniglot_lake(files)
