"""Dataset preparation (textvae.data.prepare) and the synthetic generator; never downloads."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from textvae.cli.data import app, run_script
from textvae.data import image_datasets, prepare
from textvae.data.prepare import available_datasets, prepare_dataset
from textvae.data.synthetic import generate_synthetic, sample_synthetic, synthetic_splits
from textvae.errors import TextVAEError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SPLIT_FILES = ("train.txt", "valid.txt", "test.txt")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def doc_lines(tag: str, n: int) -> bytes:
    """n distinct documents; one has a \\r inside, which must survive byte for byte."""
    return b"".join(
        f"{tag} doc {i} w{i % 7} \r x\n".encode() if i == 3 else f"{tag} doc {i} w{i % 7}\n".encode() for i in range(n)
    )


def put(folder: Path, name: str, data: bytes, gz: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if gz:
        (folder / f"{name}.gz").write_bytes(gzip.compress(data))
    else:
        (folder / name).write_bytes(data)


@pytest.fixture
def yahoo_files(monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """Fixture Yahoo files whose sha256s are the expected ones (monkeypatched table)."""
    files = {
        "yahoo.valid.txt": doc_lines("valid", 10_000),
        "yahoo.test.txt": doc_lines("test", 40),
        "vocab.txt": b"_UNK\ndoc\nvalid\ntest\n",
    }
    for name, data in files.items():
        monkeypatch.setitem(prepare.KNOWN_DIGESTS, f"yahoo/{name}", f"sha256:{sha256(data)}")
    return files


@pytest.fixture
def yahoo_dir(tmp_path: Path, yahoo_files: dict[str, bytes]) -> Path:
    """A local folder like ../shared/data/yahoo: gzipped valid and vocab, a plain test file, no train."""
    folder = tmp_path / "yahoo"
    for name, data in yahoo_files.items():
        put(folder, name, data, gz=name != "yahoo.test.txt")
    return folder


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def test_registry_names() -> None:
    assert {"yahoo", "yelp", "ptb", "synthetic", "yahoo-mini", "synthetic-generated"} <= set(available_datasets())


def test_yahoo_mini_splits_are_byte_identical(tmp_path: Path, yahoo_dir: Path, yahoo_files: dict[str, bytes]) -> None:
    out = prepare_dataset("yahoo-mini", tmp_path / "out", source=yahoo_dir)
    valid_lines = io.BytesIO(yahoo_files["yahoo.valid.txt"]).readlines()
    assert (out / "train.txt").read_bytes() == b"".join(valid_lines[:9000])
    assert (out / "valid.txt").read_bytes() == b"".join(valid_lines[9000:])
    assert (out / "test.txt").read_bytes() == yahoo_files["yahoo.test.txt"]
    assert (out / "vocab.txt").read_bytes() == yahoo_files["vocab.txt"]
    m = manifest(out)
    assert {k: v["lines"] for k, v in m["outputs"].items()} == {
        "train.txt": 9000,
        "valid.txt": 1000,
        "test.txt": 40,
        "vocab.txt": 4,
    }
    assert m["outputs"]["test.txt"]["sha256"] == sha256(yahoo_files["yahoo.test.txt"])
    assert all(rec["verified"] for rec in m["inputs"].values())
    assert m["source"] == {"kind": "local folder", "path": str(yahoo_dir.resolve())}


def test_sha256_mismatch_leaves_nothing(tmp_path: Path, yahoo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(prepare.KNOWN_DIGESTS, "yahoo/yahoo.test.txt", "sha256:" + "0" * 64)
    out = tmp_path / "out"
    with pytest.raises(TextVAEError, match=r"yahoo\.test\.txt.*does not match"):
        prepare_dataset("yahoo-mini", out, source=yahoo_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["yahoo"]  # no out_dir, no staging folder


def test_missing_train_split_names_file_and_suggests_mini(tmp_path: Path, yahoo_dir: Path) -> None:
    with pytest.raises(TextVAEError, match=r"yahoo\.train\.txt.*yahoo-mini") as err:
        prepare_dataset("yahoo", tmp_path / "out", source=yahoo_dir)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_full_yahoo_with_git_blob_digest(tmp_path: Path, yahoo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train = doc_lines("train", 30)
    put(yahoo_dir, "yahoo.train.txt", train, gz=False)
    blob = hashlib.sha1(b"blob %d\0" % len(train) + train).hexdigest()
    monkeypatch.setitem(prepare.KNOWN_DIGESTS, "yahoo/yahoo.train.txt", f"git-blob:{blob}")
    out = prepare_dataset("yahoo", tmp_path / "out", source=yahoo_dir)
    assert (out / "train.txt").read_bytes() == train
    assert manifest(out)["inputs"]["yahoo.train.txt"]["expected"] == f"git-blob:{blob}"
    monkeypatch.setitem(prepare.KNOWN_DIGESTS, "yahoo/yahoo.train.txt", "git-blob:" + "f" * 40)
    with pytest.raises(TextVAEError, match="git-blob"):
        prepare_dataset("yahoo", tmp_path / "out2", source=yahoo_dir)


def test_existing_out_dir_is_kept_unless_overwrite(tmp_path: Path, yahoo_dir: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(TextVAEError, match="overwrite"):
        prepare_dataset("yahoo-mini", out, source=yahoo_dir)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    prepare_dataset("yahoo-mini", out, source=yahoo_dir, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", *sorted(SPLIT_FILES), "vocab.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "yahoo"]


def make_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_download_path_with_file_url_and_cache(
    tmp_path: Path, yahoo_files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The URL path end to end, on a file:// URL: stream to the cache, extract from the archive."""
    archive = make_tar(
        tmp_path / "datasets.tar.gz",
        {
            **{f"datasets/yahoo_data/{name}": data for name, data in yahoo_files.items()},
            "datasets/yelp_data/vocab.txt": b"not the yahoo vocab\n",
        },
    )
    spec = prepare.get_spec("yahoo-mini")
    remote = dataclasses.replace(spec.remote, url=archive.as_uri())
    monkeypatch.setitem(prepare.DATASETS._items, "yahoo-mini", dataclasses.replace(spec, remote=remote))
    monkeypatch.setenv("TEXTVAE_CACHE", str(tmp_path / "cache"))
    out = prepare_dataset("yahoo-mini", tmp_path / "out")
    assert (out / "vocab.txt").read_bytes() == yahoo_files["vocab.txt"]
    assert manifest(out)["source"]["url"] == archive.as_uri()
    assert (tmp_path / "cache" / "downloads" / remote.archive_name).is_file()
    archive.unlink()  # the second run must use the cached copy
    prepare_dataset("yahoo-mini", tmp_path / "out", overwrite=True)


def test_local_archive_source_and_synthetic_split_semantics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {"synthetic_train.txt": b"1 2 3 \n4 5 6 \n", "synthetic_test.txt": b"7 8 9 \n"}
    for name, data in files.items():
        monkeypatch.setitem(prepare.KNOWN_DIGESTS, f"synthetic/{name}", f"sha256:{sha256(data)}")
    archive = make_tar(tmp_path / "he.tar.gz", {f"./datasets/synthetic_data/{k}": v for k, v in files.items()})
    out = prepare_dataset("synthetic", tmp_path / "out", source=archive)
    assert (out / "valid.txt").read_bytes() == (out / "test.txt").read_bytes() == files["synthetic_test.txt"]
    assert manifest(out)["source"]["kind"] == "local archive"
    assert any("synthetic_test.txt" in note for note in manifest(out)["notes"])


@pytest.mark.parametrize(
    ("name", "source", "message"),
    [
        ("nope", None, "unknown dataset 'nope'"),
        ("synthetic-generated", Path("."), "no --from"),
        ("ptb", Path("/does/not/exist"), "does not exist"),
    ],
)
def test_user_errors(tmp_path: Path, name: str, source: Path | None, message: str) -> None:
    with pytest.raises(TextVAEError, match=message):
        prepare_dataset(name, tmp_path / "out", source=source)


def test_cli_prepare_and_script(tmp_path: Path, yahoo_dir: Path) -> None:
    runner = CliRunner()
    assert "yahoo-mini" in runner.invoke(app, ["prepare", "--help"]).output
    result = runner.invoke(app, ["prepare", "yahoo-mini", "--from", str(yahoo_dir), "-o", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert "train.txt" in result.output and "9,000" in result.output
    assert run_script("yahoo-mini", argv=["--from", str(yahoo_dir), "--out", str(tmp_path / "b")]) == 0
    assert run_script("yahoo", argv=["--from", str(yahoo_dir), "--out", str(tmp_path / "c")]) == 1


# --- the synthetic generator --------------------------------------------------------------------


def test_generator_is_deterministic_and_well_formed() -> None:
    lines = generate_synthetic(300, seed=7, vocab_size=50)
    assert lines == generate_synthetic(300, seed=7, vocab_size=50)
    assert lines != generate_synthetic(300, seed=8, vocab_size=50)
    ids = [[int(tok) for tok in line.split()] for line in lines]
    assert all(len(row) == 10 and all(0 <= i < 50 for i in row) for row in ids)
    assert all(line.endswith(" ") and "  " not in line for line in lines)  # He et al.'s format


def test_generator_depends_on_z_and_is_neither_constant_nor_uniform() -> None:
    sample = sample_synthetic(800, seed=0)
    tokens, comp = sample.tokens[:, 1:], sample.component  # the first token is uniform by design

    def unigram(rows: torch.Tensor) -> torch.Tensor:
        return torch.bincount(rows.flatten(), minlength=1000).float() / rows.numel()

    def tv(a: torch.Tensor, b: torch.Tensor) -> float:
        return 0.5 * (unigram(a) - unigram(b)).abs().sum().item()

    same = tokens[comp == 0]
    assert tv(tokens[comp == 0], tokens[comp == 1]) > 2 * tv(same[::2], same[1::2])
    p = unigram(tokens)
    entropy = -(p[p > 0] * p[p > 0].log()).sum().item()
    assert 2.0 < entropy < 0.95 * torch.log(torch.tensor(1000.0)).item()


def test_synthetic_splits_shapes() -> None:
    splits = synthetic_splits(seed=3, n_train=20, n_valid=5, n_test=7)
    assert {k: len(v) for k, v in splits.items()} == {"train": 20, "valid": 5, "test": 7}
    assert splits == synthetic_splits(seed=3, n_train=20, n_valid=5, n_test=7)


# --- the real data, where ../shared/data exists -------------------------------------------------


@pytest.mark.skipif(not (SHARED / "ptb").is_dir() or not (SHARED / "yahoo").is_dir(), reason="no ../shared/data")
def test_real_ptb_and_yahoo_mini(tmp_path: Path) -> None:
    ptb = manifest(prepare_dataset("ptb", tmp_path / "ptb", source=SHARED / "ptb"))["outputs"]
    assert [ptb[f]["lines"] for f in SPLIT_FILES] == [42_068, 3_370, 3_761]
    assert [ptb[f]["sha256"] for f in SPLIT_FILES] == [
        prepare.KNOWN_DIGESTS[f"ptb/ptb.{s}.txt"].removeprefix("sha256:") for s in ("train", "valid", "test")
    ]
    mini = manifest(prepare_dataset("yahoo-mini", tmp_path / "mini", source=SHARED / "yahoo"))
    assert [mini["outputs"][f]["lines"] for f in SPLIT_FILES] == [9_000, 1_000, 10_000]
    assert mini["outputs"]["test.txt"]["sha256"] == prepare.KNOWN_DIGESTS["yahoo/yahoo.test.txt"].split(":")[1]
    assert mini["outputs"]["vocab.txt"]["sha256"] == prepare.KNOWN_DIGESTS["yahoo/vocab.txt"].split(":")[1]
    assert mini["inputs"]["yahoo.valid.txt"]["verified"]


# --- TinyStories --------------------------------------------------------------------------------


def story_file(n: int) -> bytes:
    """n stories of two paragraphs each, separated as in TinyStories, then a truncated story."""
    body = b"".join(f"Story {i} begins  here.\nIt ends {i}.\n<|endoftext|>\n".encode() for i in range(n))
    return body + b"A truncated sto"


def test_tinystories_joins_paragraphs_drops_the_cut_story_and_holds_out_every_15th(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = story_file(32)
    monkeypatch.setitem(prepare.KNOWN_DIGESTS, "tinystories/tinystories_sample.txt", f"sha256:{sha256(data)}")
    put(tmp_path / "src", "tinystories_sample.txt", data, gz=True)
    out = prepare_dataset("tinystories", tmp_path / "out", source=tmp_path / "src")
    lines = {name: (out / name).read_text().splitlines() for name in SPLIT_FILES}
    assert lines["valid.txt"] == ["Story 13 begins here. It ends 13.", "Story 28 begins here. It ends 28."]
    assert lines["test.txt"] == ["Story 14 begins here. It ends 14.", "Story 29 begins here. It ends 29."]
    assert len(lines["train.txt"]) == 28 and lines["train.txt"][0] == "Story 0 begins here. It ends 0."
    assert not any("truncated" in line for split in lines.values() for line in split)


def test_tinystories_refuses_a_file_with_too_few_stories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = story_file(3)
    monkeypatch.setitem(prepare.KNOWN_DIGESTS, "tinystories/tinystories_sample.txt", f"sha256:{sha256(data)}")
    put(tmp_path / "src", "tinystories_sample.txt", data, gz=False)
    with pytest.raises(TextVAEError, match="3 complete stories"):
        prepare_dataset("tinystories", tmp_path / "out", source=tmp_path / "src")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not (SHARED / "stories_tinystories_sample").is_dir(), reason="no ../shared/data")
def test_real_tinystories_sample(tmp_path: Path) -> None:
    out = prepare_dataset("tinystories", tmp_path / "stories", source=SHARED / "stories_tinystories_sample")
    counts = {name: len((out / name).read_text().splitlines()) for name in SPLIT_FILES}
    assert counts == {"train.txt": 2008, "valid.txt": 154, "test.txt": 154}  # 2,316 complete stories
    assert manifest(out)["inputs"]["tinystories_sample.txt"]["verified"] is True


# --- the image datasets on the real data, where ../shared/data exists ---------------------------


def _images(path: Path) -> np.ndarray:
    with np.load(path, allow_pickle=False) as arrays:
        return arrays["images"]


@pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason="no ../shared/data/mnist")
def test_real_mnist(tmp_path: Path) -> None:
    out = prepare_dataset("mnist", tmp_path / "mnist", source=SHARED / "mnist")
    m = manifest(out)
    assert [m["outputs"][f"{s}.npz"]["images"] for s in ("train", "valid", "test")] == [55_000, 5_000, 10_000]
    assert m["inputs"]["mnist_uint8.npz"]["verified"]
    full_train = np.concatenate([_images(out / "train.npz"), _images(out / "valid.npz")])
    assert full_train.shape == (60_000, 28, 28) and round(float(full_train.mean()), 6) == 33.318421  # SOURCE.md
    assert round(float(_images(out / "test.npz").mean()), 6) == 33.791224


@pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason="no ../shared/data/mnist")
def test_real_mnist_npz_holds_the_official_idx_arrays() -> None:
    """IDX files written from mnist_uint8.npz have the official files' sha256s: the download gives the same arrays."""
    with np.load(SHARED / "mnist" / "mnist_uint8.npz", allow_pickle=False) as arrays:
        for key, name in image_datasets.MNIST_IDX.items():
            array = arrays[key]
            idx = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
            assert f"sha256:{sha256(idx + array.tobytes())}" == prepare.KNOWN_DIGESTS[f"mnist/{name}"]


@pytest.mark.skipif(not (SHARED / "omniglot").is_dir(), reason="no ../shared/data/omniglot")
def test_real_omniglot_from_lake_images(tmp_path: Path) -> None:
    out = prepare_dataset("omniglot", tmp_path / "omniglot", source=SHARED / "omniglot")
    m = manifest(out)
    assert [m["outputs"][f"{s}.npz"]["images"] for s in ("train", "valid", "test")] == [23_000, 1_345, 8_115]
    assert all(record["shape"] == [28, 28] for record in m["outputs"].values())
    assert all(record["verified"] for record in m["inputs"].values()) and "NOT Burda" in m["warnings"][0]
    test = _images(out / "test.npz")
    assert test.dtype == np.uint8 and test.max() == 255 and 0 < test.mean() < 64  # ink is the minority, 255
