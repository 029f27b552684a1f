"""Image data (textvae.data.images) and the image preparers (mnist, omniglot) on tiny synthetic inputs."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import savemat
from torch.utils.data import DataLoader
from typer.testing import CliRunner

from textvae.cli.data import app, run_script
from textvae.data import image_datasets, prepare
from textvae.data.images import (
    ImageBatch,
    ImageSplit,
    load_image_split,
    parse_idx,
    resize_images,
    save_image_split,
)
from textvae.data.prepare import prepare_dataset
from textvae.errors import TextVAEError

GREY = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)  # every grey level once


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as arrays:
        return dict(arrays)


def trust(family: str, name: str, data: bytes, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """Make `data` the expected content of input `family/name` (fixtures are not the real files)."""
    monkeypatch.setitem(prepare.KNOWN_DIGESTS, f"{family}/{name}", f"sha256:{sha256(data)}")
    return data


# --- ImageSplit and ImageBatch ------------------------------------------------------------------


def test_dynamic_binarisation_is_bernoulli_of_the_grey_level_and_fresh_each_batch() -> None:
    torch.manual_seed(0)
    split, n = ImageSplit(GREY, "dynamic"), 4000
    batch = split.collate([split[0]] * n)
    p = torch.from_numpy(GREY[None].astype(np.float32) / 255)
    assert set(batch.images.unique().tolist()) <= {0.0, 1.0}
    tolerance = 5 * (p * (1 - p) / n).sqrt() + 1e-6  # 5 binomial sd per pixel
    assert ((batch.images.mean(0) - p[0]).abs() <= tolerance[0]).all()
    assert not torch.equal(split.collate([split[0]]).images, split.collate([split[0]]).images)


def test_fixed_binarisation_is_reproducible_survives_subset_and_has_the_right_mean() -> None:
    pixels = np.repeat(GREY, 2000, axis=0)
    split = ImageSplit(pixels, "fixed", seed=3)
    first = split.images(range(len(split)))
    assert set(first.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(first, ImageSplit(pixels, "fixed", seed=3).images(range(len(split))))
    assert not torch.equal(first, ImageSplit(pixels, "fixed", seed=4).images(range(len(split))))
    assert torch.equal(split.collate([split[i] for i in range(5)]).images, first[:5])
    assert torch.equal(split.subset(7).images(range(7)), first[:7]) and len(split.subset(7)) == 7
    p = torch.from_numpy(GREY.astype(np.float32) / 255)
    assert ((first.mean(0) - p).abs() <= 5 * (p * (1 - p) / 2000).sqrt() + 1e-6).all()
    assert torch.equal(first[:, 0, 0, 0], torch.zeros(2000)) and torch.equal(first[:, 0, -1, -1], torch.ones(2000))


def test_none_gives_the_grey_values() -> None:
    split = ImageSplit(GREY, "none")
    assert torch.equal(split.images([0]), torch.from_numpy(GREY[None].astype(np.float32) / 255))


def test_batches_shapes_dtypes_and_dataloader() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (10, 3, 5, 4), dtype=np.uint8)
    split = ImageSplit(pixels, "dynamic")
    assert (len(split), split.image_shape, split.n_tokens) == (10, (3, 5, 4), 600)
    assert split.lengths == [60] * 10
    i, array = split[4]
    assert i == 4 and array.dtype == np.uint8 and array.shape == (3, 5, 4)
    loader = DataLoader(split, batch_size=4, shuffle=True, collate_fn=split.collate)
    batches = list(loader)
    assert [len(b) for b in batches] == [4, 4, 2]
    batch = batches[0]
    assert isinstance(batch, ImageBatch) and batch.data is batch.images and batch.lengths is None
    assert batch.images.dtype == torch.float32 and batch.images.shape == (4, 3, 5, 4)
    assert batch.index.dtype == torch.long and batch.n_predicted == 4 * 60
    assert sorted(torch.cat([b.index for b in batches]).tolist()) == list(range(10))
    moved = batch.to("cpu")
    assert torch.equal(moved.images, batch.images) and torch.equal(moved.index, batch.index)
    assert ImageSplit(pixels[:, 0]).image_shape == (1, 5, 4)


def test_bad_binarisation_or_pixels() -> None:
    with pytest.raises(TextVAEError, match="binarization 'soft'"):
        ImageSplit(GREY, "soft")
    with pytest.raises(TextVAEError, match="uint8"):
        ImageSplit(GREY.astype(np.float32))


# --- reading and writing splits -----------------------------------------------------------------


def test_save_and_load_round_trip_atomic_and_deterministic(tmp_path: Path) -> None:
    images = np.random.default_rng(1).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    path = save_image_split(tmp_path / "a.npz", images, np.arange(6, dtype=np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz"]  # no temporary file left
    arrays = npz(path)
    assert np.array_equal(arrays["images"], images) and arrays["labels"].dtype == np.int64
    assert save_image_split(tmp_path / "b.npz", images, np.arange(6)).read_bytes() == path.read_bytes()
    split = load_image_split(path, "fixed", seed=2, limit=4)
    assert len(split) == 4 and split.image_shape == (1, 28, 28)
    assert torch.equal(split.images(range(4)), load_image_split(path, "fixed", seed=2).images(range(4)))
    save_image_split(tmp_path / "c.npz", images)
    assert set(npz(tmp_path / "c.npz")) == {"images"}


def write_bad(path: Path, kind: str) -> Path:
    if kind == "text":
        path.write_text("not an archive\n")
    elif kind == "npy":
        with open(path, "wb") as fh:  # np.save(path) would add ".npy" to the name
            np.save(fh, GREY)
    elif kind == "no images key":
        np.savez(path, pixels=GREY)
    elif kind == "float":
        np.savez(path, images=GREY.astype(np.float32))
    elif kind == "2-d":
        np.savez(path, images=GREY[0])
    elif kind == "empty":
        np.savez(path, images=GREY[:0])
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "file not found"),
        ("text", "not a numpy .npz archive"),
        ("npy", "single .npy array"),
        ("no images key", "no array 'images'"),
        ("float", "'images' is float32, expected uint8"),
        ("2-d", "'images' has 2 dimensions"),
        ("empty", "'images' is empty"),
    ],
)
def test_load_errors_name_the_file(tmp_path: Path, kind: str, message: str) -> None:
    path = write_bad(tmp_path / "split.npz", kind)
    with pytest.raises(TextVAEError, match=re.escape(str(path)) + ".*" + re.escape(message)) as err:
        load_image_split(path, "dynamic")
    assert "\n" not in str(err.value)


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes, as the original MNIST files."""
    return struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def test_idx_parser() -> None:
    array = np.random.default_rng(2).integers(0, 256, (3, 4, 5), dtype=np.uint8)
    assert np.array_equal(parse_idx(idx_bytes(array), "x"), array)
    assert np.array_equal(parse_idx(idx_bytes(array[0, 0]), "y"), array[0, 0])
    with pytest.raises(TextVAEError, match="f: 59 data bytes, the header says shape"):
        parse_idx(idx_bytes(array)[:-1], "f")
    with pytest.raises(TextVAEError, match="g: not an IDX file of unsigned bytes"):
        parse_idx(b"\0\0\x0d\x01" + b"\0" * 8, "g")  # float IDX
    with pytest.raises(TextVAEError, match="truncated"):
        parse_idx(b"\0\0\x08\x03\0\0", "h")


def test_resize_by_area() -> None:
    image = np.zeros((105, 105), dtype=np.uint8)
    image[:, :42] = 255  # 42 source columns = 11.2 output columns
    out = resize_images(np.stack([image, np.full_like(image, 255)]), 28)
    assert out.shape == (2, 28, 28) and out.dtype == np.uint8
    assert (out[0, :, :11] == 255).all() and (out[0, :, 12:] == 0).all() and 0 < out[0, 0, 11] < 255
    assert (out[1] == 255).all()


# --- mnist --------------------------------------------------------------------------------------


@pytest.fixture
def mnist_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {
        "x_train": rng.integers(0, 256, (image_datasets.MNIST_VALID + 10, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, image_datasets.MNIST_VALID + 10).astype(np.uint8),
        "x_test": rng.integers(0, 256, (7, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, 7).astype(np.uint8),
    }


def write_mnist_npz(folder: Path, arrays: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / "mnist_uint8.npz", **arrays)
    trust("mnist", "mnist_uint8.npz", (folder / "mnist_uint8.npz").read_bytes(), monkeypatch)
    return folder


def write_mnist_idx(folder: Path, arrays: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch) -> Path:
    """The four IDX files, the image files gzipped (as downloaded), the label files plain."""
    folder.mkdir(parents=True, exist_ok=True)
    for key, name in image_datasets.MNIST_IDX.items():
        data = trust("mnist", name, idx_bytes(arrays[key]), monkeypatch)
        if "images" in name:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return folder


def test_mnist_splits_from_npz_and_idx_are_identical(
    tmp_path: Path, mnist_arrays: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = prepare_dataset("mnist", tmp_path / "a", source=write_mnist_npz(tmp_path / "npz", mnist_arrays, monkeypatch))
    m = manifest(out)
    assert {k: v["images"] for k, v in m["outputs"].items()} == {"train.npz": 10, "valid.npz": 5000, "test.npz": 7}
    assert list(m["inputs"]) == ["mnist_uint8.npz"] and m["inputs"]["mnist_uint8.npz"]["verified"]
    assert m["outputs"]["test.npz"]["shape"] == [28, 28] and m["format"].startswith("npz")
    train, valid = npz(out / "train.npz"), npz(out / "valid.npz")
    assert np.array_equal(train["images"], mnist_arrays["x_train"][:10])
    assert np.array_equal(valid["labels"], mnist_arrays["y_train"][10:]) and valid["labels"].dtype == np.int64
    assert np.array_equal(npz(out / "test.npz")["images"], mnist_arrays["x_test"])
    assert m["outputs"]["test.npz"]["mean_pixel"] == round(float(mnist_arrays["x_test"].mean()), 6)
    idx = prepare_dataset("mnist", tmp_path / "b", source=write_mnist_idx(tmp_path / "idx", mnist_arrays, monkeypatch))
    for split in ("train.npz", "valid.npz", "test.npz"):
        assert (idx / split).read_bytes() == (out / split).read_bytes()
    assert sorted(manifest(idx)["inputs"]) == sorted(image_datasets.MNIST_IDX.values())


def test_mnist_prefers_the_npz_and_explains_what_is_missing(
    tmp_path: Path, mnist_arrays: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    both = write_mnist_idx(write_mnist_npz(tmp_path / "both", mnist_arrays, monkeypatch), mnist_arrays, monkeypatch)
    assert list(manifest(prepare_dataset("mnist", tmp_path / "out", source=both))["inputs"]) == ["mnist_uint8.npz"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(TextVAEError, match=r"missing train-images-idx3-ubyte.*or instead mnist_uint8\.npz") as err:
        prepare_dataset("mnist", tmp_path / "out2", source=tmp_path / "empty")
    assert "\n" not in str(err.value)


def test_mnist_download_path_with_file_urls(
    tmp_path: Path, mnist_arrays: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The single-file download path end to end on file:// URLs (no network): gz files cached, then read."""
    served = write_mnist_idx(tmp_path / "served", mnist_arrays, monkeypatch)
    for name in image_datasets.MNIST_IDX.values():
        if not (served / f"{name}.gz").exists():
            (served / f"{name}.gz").write_bytes(gzip.compress((served / name).read_bytes()))
    spec = prepare.get_spec("mnist")
    urls = tuple((name, (served / f"{name}.gz").as_uri()) for name in image_datasets.MNIST_IDX.values())
    remote = prepare.Downloads(urls, "test")
    monkeypatch.setitem(prepare.DATASETS._items, "mnist", dataclasses.replace(spec, remote=remote))
    monkeypatch.setenv("TEXTVAE_CACHE", str(tmp_path / "cache"))
    out = prepare_dataset("mnist", tmp_path / "out")
    assert np.array_equal(npz(out / "test.npz")["images"], mnist_arrays["x_test"])
    assert manifest(out)["source"]["kind"] == "urls"
    assert (tmp_path / "cache" / "downloads" / "mnist" / "t10k-images-idx3-ubyte.gz").is_file()


def test_mnist_errors_leave_nothing_and_existing_output_is_kept(
    tmp_path: Path, mnist_arrays: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write_mnist_npz(tmp_path / "src", mnist_arrays, monkeypatch)
    monkeypatch.setitem(prepare.KNOWN_DIGESTS, "mnist/mnist_uint8.npz", "sha256:" + "0" * 64)
    with pytest.raises(TextVAEError, match=r"mnist_uint8\.npz.*does not match"):
        prepare_dataset("mnist", tmp_path / "out", source=source)
    bad = write_mnist_npz(tmp_path / "bad", {**mnist_arrays, "x_test": mnist_arrays["x_test"] / 255}, monkeypatch)
    with pytest.raises(TextVAEError, match=r"mnist_uint8\.npz: 'x_test' is float64, expected uint8"):
        prepare_dataset("mnist", tmp_path / "out", source=bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "src"]  # no output, no staging folder
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    write_mnist_npz(source, mnist_arrays, monkeypatch)
    with pytest.raises(TextVAEError, match="overwrite"):
        prepare_dataset("mnist", out, source=source)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    prepare_dataset("mnist", out, source=source, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "test.npz", "train.npz", "valid.npz"]


def test_mnist_cli_and_script(tmp_path: Path, mnist_arrays: dict[str, np.ndarray], monkeypatch) -> None:
    source = write_mnist_npz(tmp_path / "src", mnist_arrays, monkeypatch)
    result = CliRunner().invoke(app, ["prepare", "mnist", "--from", str(source), "-o", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert "images" in result.output and "5,000" in result.output and "784 (28x28)" in result.output
    assert run_script("mnist", argv=["--from", str(source), "--out", str(tmp_path / "b")]) == 0
    assert run_script("mnist", argv=["--from", str(source), "--out", str(tmp_path / "b")]) == 1  # not empty


# --- omniglot -----------------------------------------------------------------------------------


def lake_file(n_chars: int) -> bytes:
    """Like bitsandscraps' npz: True = background; character c has an ink square whose side grows with c."""
    images = np.ones((n_chars, 20, 105, 105), dtype=bool)
    for c in range(n_chars):
        images[c, :, : 42 + c % 3, : 42 + c % 3] = False
    labels = np.repeat(np.arange(n_chars, dtype=np.int64)[:, None], 20, axis=1)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, images=images, labels=labels)
    return buffer.getvalue()


@pytest.fixture
def lake_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "lake"
    folder.mkdir()
    for name, n_chars in zip(image_datasets.OMNIGLOT_FILES, (60, 40)):  # 100 x 15 = 1,500 in the training pool
        (folder / name).write_bytes(trust("omniglot", name, lake_file(n_chars), monkeypatch))
    return folder


def test_omniglot_from_lake_images_inverted_resized_split_by_drawer_and_flagged(tmp_path: Path, lake_dir: Path) -> None:
    out = prepare_dataset("omniglot", tmp_path / "out", source=lake_dir)
    m = manifest(out)
    assert {k: v["images"] for k, v in m["outputs"].items()} == {"train.npz": 155, "valid.npz": 1345, "test.npz": 500}
    assert "NOT Burda" in m["warnings"][0]
    splits = {name: npz(out / name) for name in ("train.npz", "valid.npz", "test.npz")}
    for arrays in splits.values():
        images = arrays["images"]
        assert images.shape[1:] == (28, 28) and images.dtype == np.uint8
        assert (images[:, :11, :11] == 255).all() and (images[:, 12:] == 0).all() and (images[:, :, 12:] == 0).all()
    test_labels = splits["test.npz"]["labels"]
    assert np.array_equal(test_labels, np.repeat(np.arange(100), 5))  # evaluation characters after background
    pool = np.concatenate([splits["train.npz"]["labels"], splits["valid.npz"]["labels"]])
    assert np.array_equal(np.bincount(pool), np.full(100, 15))
    again = prepare_dataset("omniglot", tmp_path / "again", source=lake_dir)
    assert (again / "valid.npz").read_bytes() == (out / "valid.npz").read_bytes()  # the seeded hold-out
    result = CliRunner().invoke(app, ["prepare", "omniglot", "--from", str(lake_dir), "-o", str(tmp_path / "cli")])
    assert result.exit_code == 0 and "warning: this is NOT Burda" in result.output


def chardata(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """[784, n] grey columns, each a 28x28 image flattened in Fortran order, and the images themselves."""
    images = rng.random((n, 28, 28))
    images[0] = 0
    images[0, 0, :] = 1  # top row only: transposing wrongly would give the left column
    return images.reshape(n, -1, order="F").T, images


def test_omniglot_prefers_burdas_chardata_and_transposes(
    tmp_path: Path, lake_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(7)
    (data, train_images), (testdata, test_images) = chardata(rng, 1400), chardata(rng, 10)
    target = np.eye(50)[:, rng.integers(0, 50, 1400)]
    savemat(lake_dir / "chardata.mat", {"data": data, "testdata": testdata, "target": target})
    trust("omniglot", "chardata.mat", (lake_dir / "chardata.mat").read_bytes(), monkeypatch)
    out = prepare_dataset("omniglot", tmp_path / "out", source=lake_dir)
    m = manifest(out)
    assert list(m["inputs"]) == ["chardata.mat"] and "warnings" not in m
    assert {k: v["images"] for k, v in m["outputs"].items()} == {"train.npz": 55, "valid.npz": 1345, "test.npz": 10}
    test = npz(out / "test.npz")
    assert np.array_equal(test["images"], np.rint(test_images * 255).astype(np.uint8)) and "labels" not in test
    assert (test["images"][0, 0] == 255).all() and (test["images"][0, 1:] == 0).all()
    train, valid = npz(out / "train.npz"), npz(out / "valid.npz")
    keep, held = image_datasets._hold_out(1400, 1345)
    assert np.array_equal(valid["images"], np.rint(train_images[held] * 255).astype(np.uint8))
    assert np.array_equal(train["labels"], target.argmax(0)[keep])
    assert sorted([*keep, *held]) == list(range(1400)) and list(held) == sorted(held)


def test_omniglot_rejects_a_bad_chardata_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source, out = tmp_path / "src", tmp_path / "out"
    source.mkdir()
    (source / "chardata.mat").write_bytes(trust("omniglot", "chardata.mat", b"garbage" * 30, monkeypatch))
    with pytest.raises(TextVAEError, match="chardata.mat: cannot read it as a MATLAB file"):
        prepare_dataset("omniglot", out, source=source)
    data, _ = chardata(np.random.default_rng(0), 1400)
    savemat(source / "chardata.mat", {"data": data * 2, "testdata": data[:, :3]})
    trust("omniglot", "chardata.mat", (source / "chardata.mat").read_bytes(), monkeypatch)
    with pytest.raises(TextVAEError, match=r"chardata.mat: 'data' has values outside \[0, 1\]"):
        prepare_dataset("omniglot", out, source=source)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
