"""Prepare benchmark datasets: fetch (download or local copy), verify, split and write atomically.

Each dataset is a `DatasetSpec` in a registry (`textvae.registries.DATASETS`) filled by `register`
(a plugin file registers its own the same way). A spec names the input files it needs, where they
originally live (`Remote`: an archive URL and the folder inside it) and a
`build` function that turns the verified input lines into output files. `prepare_dataset` does
the rest: finds the inputs (download, local folder, or a local copy of the archive), checks every
input against `KNOWN_DIGESTS`, writes `train.txt` / `valid.txt` / `test.txt` (+ `vocab.txt`) and
`manifest.json` into a temporary sibling folder and renames it into place.

Image datasets (`images=True`: MNIST, OMNIGLOT) get each input's verified bytes whole, download single
files (`Downloads`), may accept another set of input files from a local folder (`preferred`), and
write `train.npz` / `valid.npz` / `test.npz` (`ImageOutput`, see textvae.data.images).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import secrets
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from textvae import __version__
from textvae.data import synthetic
from textvae.data.images import save_image_split
from textvae.errors import TextVAEError
from textvae.registries import DATASETS

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")

# He et al. 2019 (jxhe/vae-lagging-encoder, README "Data" + prepare_data.py) ship Yahoo, Yelp and
# the synthetic data in one archive on Google Drive, file id 1yH3Ufj20R06OX1prPMPS6E3fKSG_2MqN
# (datasets.tar.gz, extracting to datasets/{yahoo_data,yelp_data,synthetic_data,omniglot_data}/).
HE_ET_AL_DRIVE_ID = "1yH3Ufj20R06OX1prPMPS6E3fKSG_2MqN"
HE_ET_AL_URL = f"https://drive.usercontent.google.com/download?id={HE_ET_AL_DRIVE_ID}&export=download&confirm=t"
HE_ET_AL_REFERENCE = (
    "jxhe/vae-lagging-encoder prepare_data.py (He et al. 2019 datasets.tar.gz, "
    f"https://drive.google.com/uc?export=download&id={HE_ET_AL_DRIVE_ID})"
)
PTB_URL = "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz"
PTB_REFERENCE = "Mikolov's RNNLM simple-examples (https://www.fit.vutbr.cz/~imikolov/rnnlm/)"

# Expected digests of the original, uncompressed input files, keyed "family/file name".
# "sha256:<hex>" or "git-blob:<hex>" (`git hash-object FILE`, where only that is known).
# Sources: ../shared/data/*/SOURCE.md.
KNOWN_DIGESTS: dict[str, str] = {
    "yahoo/yahoo.train.txt": "git-blob:ae7d4fc4d07e520dffdbd835868a1d7c7a6eb471",
    "yahoo/yahoo.valid.txt": "sha256:3247ac3ffcc4d4bfd6216f2aaa617f6706cdc4081874da39245fe156825898d1",
    "yahoo/yahoo.test.txt": "sha256:ad843c4363adbdd07d8055d9bf121e5f23c285760df43a0031b89d8538293075",
    "yahoo/vocab.txt": "sha256:52c2045275a7114d748f694d984328bed5c7cdd5b82f784ee148e7c5d0be9911",
    "yelp/yelp.train.txt": "git-blob:2c4c802349fd14b932d2dead17846ca6b4e1b870",
    "yelp/yelp.valid.txt": "git-blob:5280a264fbc11a7795cef76bb79541d67e65c568",
    "yelp/yelp.test.txt": "git-blob:8c61afcb9c034eb53cc390c315c276fbdbed5a19",
    "ptb/ptb.train.txt": "sha256:fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
    "ptb/ptb.valid.txt": "sha256:c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
    "ptb/ptb.test.txt": "sha256:dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
    "synthetic/synthetic_train.txt": "sha256:7625f9fa3c559a54cee18497dbb1adc0b7a95eef254933a9f7634ffa8a0a4954",
    "synthetic/synthetic_test.txt": "sha256:f768b14530ad0179febabd8cce95f75e27f3958ca397e07b83a5379a3e137e1f",
    "tinystories/tinystories_sample.txt": "sha256:5352b299dcb1a32898b2d779b145b5a05f3e1265953fd21c264c9f9f9c9ae33d",
    "mnist/mnist_uint8.npz": "sha256:06af5dfe73b70e3bc1c36439982b18a8d76803db9b544f6fdf838a37fbb01b64",
    # The official IDX files, uncompressed. These are also the sha256s of IDX files written from the arrays of
    # mnist_uint8.npz (header + bytes): both sources hold the same arrays.
    "mnist/train-images-idx3-ubyte": "sha256:ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "mnist/train-labels-idx1-ubyte": "sha256:65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "mnist/t10k-images-idx3-ubyte": "sha256:0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "mnist/t10k-labels-idx1-ubyte": "sha256:ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    "omniglot/images_background.npz": "sha256:8bf84167413cd00beacdce3fe582f780ab538d8dbef043a6d688f2527bbce199",
    "omniglot/images_evaluation.npz": "sha256:0b84c7ffd94c4841c0040e529c86a82eaaccb986d8eadad5673f7991b7475276",
    "omniglot/chardata.mat": "git-blob:016a3536ffe5e1d38e42563a18d7a78bfaf643ec",  # yburda/iwae datasets/OMNIGLOT/
}

TINYSTORIES_EVERY = 15  # every 15th story goes to valid, the next to test
STORY_SEPARATOR = b"<|endoftext|>"
YAHOO_MINI_TRAIN = 9_000
YAHOO_MINI_VALID = 1_000
DOWNLOAD_TIMEOUT_S = 60


def _git_blob(data: bytes) -> str:
    """`git hash-object` of the bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


DIGESTERS: dict[str, Callable[[bytes], str]] = {"sha256": _sha256, "git-blob": _git_blob}


@dataclass(frozen=True)
class Remote:
    """An original download: a tar archive URL and the folder inside it that holds the files."""

    url: str
    folder: str
    archive_name: str
    reference: str


HE_ET_AL = {
    family: Remote(HE_ET_AL_URL, f"{family}_data", "he2019-datasets.tar.gz", HE_ET_AL_REFERENCE)
    for family in ("yahoo", "yelp", "synthetic")
}
PTB = Remote(PTB_URL, "simple-examples/data", "simple-examples.tgz", PTB_REFERENCE)


@dataclass(frozen=True)
class Downloads:
    """Original downloads of single files: (input name, URL) pairs; a `.gz` download is decompressed."""

    urls: tuple[tuple[str, str], ...]
    reference: str


@dataclass(frozen=True)
class Output:
    """An output file's lines (each with its original line ending) and where they came from."""

    lines: list[bytes]
    origin: str


@dataclass(frozen=True)
class ImageOutput:
    """An output .npz split: images uint8 [N, H, W] (255 = ink), labels [N] or None, and where they came from."""

    images: np.ndarray
    labels: np.ndarray | None
    origin: str


@dataclass(frozen=True)
class Built:
    """A builder's outputs with notes and warnings that depend on the source used (both go to the manifest)."""

    outputs: dict[str, Output | ImageOutput]
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


Builder = Callable[[dict[str, list[bytes]]], dict[str, Output]]
ImageBuilder = Callable[[dict[str, bytes]], "dict[str, ImageOutput] | Built"]
AnyBuilder = TypeVar("AnyBuilder", Builder, ImageBuilder)


@dataclass(frozen=True)
class DatasetSpec:
    """How to prepare one dataset."""

    name: str
    description: str
    build: Builder | ImageBuilder
    family: str = ""
    inputs: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    remote: Remote | Downloads | None = None
    labelled: bool = False
    images: bool = False  # the builder gets each input's bytes whole and returns ImageOutputs
    preferred: tuple[tuple[str, ...], ...] = ()  # input sets used instead of `inputs` when a source has one whole
    notes: tuple[str, ...] = ()
    hint: str = ""


def register(name: str, description: str, **options: Any) -> Callable[[AnyBuilder], AnyBuilder]:
    """Decorator: register `build` as the preparer of dataset `name` (options: DatasetSpec fields) in
    `textvae.registries.DATASETS`; a plugin file registers its own datasets the same way."""

    def decorate(build: AnyBuilder) -> AnyBuilder:
        DATASETS.register(name)(DatasetSpec(name=name, description=description, build=build, **options))
        return build

    return decorate


def available_datasets() -> list[str]:
    """Names accepted by `prepare_dataset`."""
    return sorted(DATASETS)


def describe_datasets() -> dict[str, str]:
    """Dataset name -> one-line description."""
    return {name: DATASETS[name].description for name in available_datasets()}


def get_spec(name: str) -> DatasetSpec:
    """The registered spec of `name`, or a TextVAEError listing the known names."""
    if name not in DATASETS:
        known = ", ".join(available_datasets())
        raise TextVAEError(f"unknown dataset {name!r}; available: {known} (a dataset of your own: --plugin FILE)")
    return DATASETS[name]


# --- the datasets -------------------------------------------------------------------------------


def split_files(stem: str) -> tuple[str, ...]:
    """`stem.train.txt`, `stem.valid.txt`, `stem.test.txt`."""
    return tuple(f"{stem}.{split}.txt" for split in SPLITS)


def _outputs(**sources: tuple[list[bytes], str]) -> dict[str, Output]:
    """Output files named `<key>.txt` from (lines, origin) pairs."""
    return {f"{key}.txt": Output(lines, origin) for key, (lines, origin) in sources.items()}


def whole_splits(stem: str) -> Builder:
    """A builder copying `stem.{train,valid,test}.txt` (and `vocab.txt` if given) unchanged."""

    def build(files: dict[str, list[bytes]]) -> dict[str, Output]:
        sources = {key: (files[name], name) for key, name in zip(SPLITS, split_files(stem), strict=True)}
        if "vocab.txt" in files:
            sources["vocab"] = (files["vocab.txt"], "vocab.txt")
        return _outputs(**sources)

    return build


def register_release(name: str, description: str, remote: Remote, extra: tuple[str, ...] = (), **options: Any) -> None:
    """Register a release whose `name.{train,valid,test}.txt` (+ `extra` inputs) are copied unchanged."""
    inputs = (*split_files(name), *extra)
    register(name, description, family=name, inputs=inputs, remote=remote, **options)(whole_splits(name))


register_release(
    "yahoo",
    "Yahoo Answers, Yang et al. 2017 split as released by He et al. 2019 (100k/10k/10k + vocab)",
    HE_ET_AL["yahoo"],
    extra=("vocab.txt",),
    hint="without the 100k train split, `yahoo-mini` needs only yahoo.valid.txt, yahoo.test.txt and vocab.txt",
)
register_release(
    "yelp",
    "Yelp reviews, Yang et al. 2017 split as released by He et al. 2019 (100k/10k/10k, label<TAB>text)",
    HE_ET_AL["yelp"],
    optional=("vocab.txt",),
    labelled=True,
    notes=("lines are `label<TAB>text` as released; vocab.txt is copied when the source ships one",),
    hint="the files are in He et al.'s datasets.tar.gz, folder yelp_data/",
)
register_release(
    "ptb",
    "Penn Treebank, Mikolov's language-modelling version (42k/3.4k/3.8k sentences)",
    PTB,
    hint="the files are in Mikolov's simple-examples.tgz, folder simple-examples/data/",
)


@register(
    "yahoo-mini",
    "Yahoo small-scale: yahoo.valid split 9k train / 1k valid, the real 10k yahoo.test, official vocab",
    family="yahoo",
    inputs=("yahoo.valid.txt", "yahoo.test.txt", "vocab.txt"),
    remote=HE_ET_AL["yahoo"],
    notes=(
        f"train.txt = the first {YAHOO_MINI_TRAIN:,} lines of yahoo.valid.txt, valid.txt = its last "
        f"{YAHOO_MINI_VALID:,} lines, test.txt = yahoo.test.txt; vocab.txt is the official Yahoo vocabulary",
    ),
)
def _yahoo_mini(files: dict[str, list[bytes]]) -> dict[str, Output]:
    valid = files["yahoo.valid.txt"]
    needed = YAHOO_MINI_TRAIN + YAHOO_MINI_VALID
    if len(valid) < needed:
        raise TextVAEError(f"yahoo-mini: yahoo.valid.txt has {len(valid)} lines, needs at least {needed}")
    return _outputs(
        train=(valid[:YAHOO_MINI_TRAIN], f"yahoo.valid.txt lines 1-{YAHOO_MINI_TRAIN}"),
        valid=(valid[-YAHOO_MINI_VALID:], f"yahoo.valid.txt lines {len(valid) - YAHOO_MINI_VALID + 1}-{len(valid)}"),
        test=(files["yahoo.test.txt"], "yahoo.test.txt"),
        vocab=(files["vocab.txt"], "vocab.txt"),
    )


@register(
    "synthetic",
    "He et al. 2019 synthetic data (LSTM from a 2-d latent), 16k train / 4k test",
    family="synthetic",
    inputs=("synthetic_train.txt", "synthetic_test.txt"),
    remote=HE_ET_AL["synthetic"],
    notes=(
        "He et al.'s config_synthetic.py uses synthetic_test.txt as both validation and test set: "
        "valid.txt and test.txt are both copies of synthetic_test.txt",
    ),
)
def _synthetic(files: dict[str, list[bytes]]) -> dict[str, Output]:
    test = (files["synthetic_test.txt"], "synthetic_test.txt")
    return _outputs(train=(files["synthetic_train.txt"], "synthetic_train.txt"), valid=test, test=test)


def stories(lines: list[bytes]) -> list[bytes]:
    """One line per complete story: paragraphs joined by a space; text after the last separator dropped."""
    out, paragraphs = [], []
    for line in lines:
        text = line.strip()
        if text == STORY_SEPARATOR:
            if paragraphs:
                out.append(b" ".join(paragraphs) + b"\n")
            paragraphs = []
        elif text:
            paragraphs.append(b" ".join(text.split()))
    return out


@register(
    "tinystories",
    "TinyStories sample (Eldan & Li 2023): 2,316 complete stories, one per line, every 15th to valid and test",
    family="tinystories",
    inputs=("tinystories_sample.txt",),
    notes=(
        "each story (paragraphs between `<|endoftext|>` lines) becomes one line, paragraphs joined by a space; "
        "the truncated story after the last separator is dropped",
        f"story i (from 0, file order) goes to valid.txt when i % {TINYSTORIES_EVERY} == {TINYSTORIES_EVERY - 2}, "
        f"to test.txt when i % {TINYSTORIES_EVERY} == {TINYSTORIES_EVERY - 1}, otherwise to train.txt",
    ),
    hint="the file is ../shared/data/stories_tinystories_sample/tinystories_sample.txt.gz (the first 2 MiB of "
    "TinyStories-train.txt from the Hugging Face dataset roneneldan/TinyStories)",
)
def _tinystories(files: dict[str, list[bytes]]) -> dict[str, Output]:
    docs = stories(files["tinystories_sample.txt"])
    every = TINYSTORIES_EVERY
    if len(docs) < every:
        raise TextVAEError(f"tinystories: tinystories_sample.txt has {len(docs)} complete stories, needs {every}")
    position = [i % every for i in range(len(docs))]
    return _outputs(
        train=([d for d, p in zip(docs, position) if p < every - 2], f"stories i % {every} < {every - 2}"),
        valid=([d for d, p in zip(docs, position) if p == every - 2], f"stories i % {every} == {every - 2}"),
        test=([d for d, p in zip(docs, position) if p == every - 1], f"stories i % {every} == {every - 1}"),
    )


GENERATED_SIZES = {"train": 16_000, "valid": 2_000, "test": 2_000}


@register(
    "synthetic-generated",
    "synthetic data from textvae's He et al.-style generator (16k/2k/2k, no download)",
    notes=(
        f"textvae.data.synthetic.synthetic_splits(seed={synthetic.DEFAULT_SEED}, "
        + ", ".join(f"n_{key}={n}" for key, n in GENERATED_SIZES.items())
        + "): vocab 1000, 10 tokens per line, temperature 1; valid and test are distinct held-out draws "
        "(He et al. drew 20k sequences and used 4k as both valid and test); train.labeled.txt and "
        "test.labeled.txt: the same lines as `component<TAB>line`, the mixture component of z that generated "
        "each (a label for latent probes)",
    ),
)
def _synthetic_generated(files: dict[str, list[bytes]]) -> dict[str, Output]:
    splits = synthetic.labeled_synthetic_splits(synthetic.DEFAULT_SEED, *GENERATED_SIZES.values())
    origin = f"generated (seed {synthetic.DEFAULT_SEED})"
    texts = {key: ([f"{line}\n".encode() for _, line in rows], origin) for key, rows in splits.items()}
    # the generating mixture component as a label (`textvae probe RUN --labels-from .../test.labeled.txt`)
    labeled = {
        f"{key}.labeled": ([f"{c}\t{line}\n".encode() for c, line in splits[key]], f"{origin}, label = component")
        for key in ("train", "test")
    }
    return _outputs(**texts, **labeled)


# --- reading and verifying inputs ---------------------------------------------------------------


@dataclass
class Fetched:
    """Verified input files: their lines (or whole bytes, for image datasets) and their manifest records."""

    location: dict[str, Any]
    lines: dict[str, list[bytes]] = field(default_factory=dict)
    data: dict[str, bytes] = field(default_factory=dict)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)


def split_lines(data: bytes) -> list[bytes]:
    """Lines split at b"\\n" only, endings kept (bytes.splitlines would also split at \\r)."""
    return io.BytesIO(data).readlines()


def verify(key: str, data: bytes, where: str) -> dict[str, Any]:
    """Check `data` against KNOWN_DIGESTS[key]; return the input's manifest record."""
    expected = KNOWN_DIGESTS.get(key)
    record: dict[str, Any] = {"path": where, "sha256": _sha256(data), "bytes": len(data)}
    record.update(expected=expected, verified=expected is not None)
    if expected is None:
        logger.warning("no known digest for %s: recording its sha256 only", key)
        return record
    kind, _, value = expected.partition(":")
    actual = DIGESTERS[kind](data)
    if actual != value:
        raise TextVAEError(
            f"{where}: {kind} {actual} does not match the expected {value} "
            "(a corrupt download or a different version of the file)"
        )
    logger.info("verified %s (%s)", where, kind)
    return record


def _read_file(path: Path) -> bytes:
    """The uncompressed bytes of a plain or gzipped file."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:  # zlib.error: a damaged .gz
        raise TextVAEError(f"cannot read {path}: {exc}") from exc


def _candidates(root: Path, name: str, folder: str) -> list[Path]:
    """Where a file may lie in a local folder: plain or .gz, at the top or in the archive's folder."""
    bases = [root, root / folder] if folder else [root]
    return [base / f"{name}{ext}" for base in bases for ext in ("", ".gz")]


def read_folder(root: Path, names: Iterable[str], folder: str) -> dict[str, tuple[bytes, str]]:
    """Files found in a local folder: name -> (bytes, path)."""
    found = {}
    for name in names:
        path = next((p for p in _candidates(root, name, folder) if p.is_file()), None)
        if path is not None:
            found[name] = (_read_file(path), str(path))
    return found


def read_archive(archive: Path, names: Iterable[str], folder: str) -> dict[str, tuple[bytes, str]]:
    """Files found in a tar archive (one streaming pass): name -> (bytes, 'archive:member')."""
    wanted = {f"{folder}/{name}": name for name in names}
    found = {}
    try:
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                path = member.name.removeprefix("./")
                key = next((k for k in wanted if path == k or path.endswith(f"/{k}")), None)
                if key is None or not member.isfile():
                    continue
                handle = tar.extractfile(member)
                if handle is not None:
                    found[wanted[key]] = (handle.read(), f"{archive}:{member.name}")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise TextVAEError(f"cannot read archive {archive}: {exc}") from exc
    return found


def cache_dir() -> Path:
    """Where downloads are kept ($TEXTVAE_CACHE, default ~/.cache/textvae)."""
    return Path(os.environ.get("TEXTVAE_CACHE", Path.home() / ".cache" / "textvae"))


def download(url: str, name: str, reference: str) -> Path:
    """Download `url` into the cache as `name` (streamed to a temp file, then renamed); reuse a cached copy."""
    target = cache_dir() / "downloads" / name
    if target.is_file():
        logger.info("using the cached download %s", target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    request = urllib.request.Request(url, headers={"User-Agent": f"textvae/{__version__}"})
    logger.info("downloading %s", url)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
            if response.headers.get_content_type() == "text/html":
                raise TextVAEError(
                    f"{url} returned a web page, not the file (quota or a changed link); "
                    f"download it by hand ({reference}) and pass --from FILE_OR_FOLDER"
                )
            shutil.copyfileobj(response, out, 1 << 20)
        tmp.replace(target)
        logger.info("downloaded %s (%.1f MB)", target, target.stat().st_size / 1e6)
    except (urllib.error.URLError, OSError) as exc:
        raise TextVAEError(
            f"could not download {url}: {exc}; download it by hand and pass --from FILE_OR_FOLDER"
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _folder(spec: DatasetSpec) -> str:
    """The folder inside the release archive that holds the files ("" when none)."""
    return spec.remote.folder if isinstance(spec.remote, Remote) else ""


def _missing_error(spec: DatasetSpec, missing: list[str], location: str) -> TextVAEError:
    folder = _folder(spec)
    looked = "NAME or NAME.gz" + (f", also under {folder}/" if folder else "")
    instead = "".join(f"; or instead {' + '.join(names)}" for names in spec.preferred)
    hint = f"; {spec.hint}" if spec.hint else ""
    return TextVAEError(f"{spec.name}: missing {', '.join(missing)}{instead} in {location} (looked for {looked}){hint}")


def _download_inputs(spec: DatasetSpec) -> tuple[dict[str, tuple[bytes, str]], dict[str, Any]]:
    """The inputs from the original download(s), and the manifest's record of where they came from."""
    remote = spec.remote
    if remote is None:
        raise TextVAEError(f"{spec.name} has no download location; pass --from DIR")
    if isinstance(remote, Remote):
        archive = download(remote.url, remote.archive_name, remote.reference)
        found = read_archive(archive, (*spec.inputs, *spec.optional), remote.folder)
        return found, {"kind": "url", "url": remote.url, "reference": remote.reference}
    found = {}
    for name, url in remote.urls:
        path = download(url, f"{spec.family}/{url.rsplit('/', 1)[-1]}", remote.reference)
        found[name] = (_read_file(path), url)
    return found, {"kind": "urls", "urls": [url for _, url in remote.urls], "reference": remote.reference}


def fetch_inputs(spec: DatasetSpec, source: Path | None) -> Fetched:
    """Find, read and verify the inputs of `spec` from `source` (folder or archive) or the download.

    A local source holding a whole `preferred` input set is read for that set instead of `inputs`.
    """
    if not spec.inputs:
        if source is not None:
            raise TextVAEError(f"{spec.name} is generated, it takes no --from source")
        return Fetched(location={"kind": "generated", "generator": "textvae.data.synthetic"})
    names = (*spec.inputs, *spec.optional, *(name for names in spec.preferred for name in names))
    folder = _folder(spec)
    if source is None:
        found, location = _download_inputs(spec)
    elif source.is_dir():
        found = read_folder(source, names, folder)
        location = {"kind": "local folder", "path": str(source.resolve())}
    elif source.is_file():
        found = read_archive(source, names, folder)
        location = {"kind": "local archive", "path": str(source.resolve())}
    else:
        raise TextVAEError(f"{spec.name}: source {source} does not exist")
    chosen = next((s for s in spec.preferred if all(name in found for name in s)), spec.inputs)
    missing = [name for name in chosen if name not in found]
    if missing:
        raise _missing_error(spec, missing, location.get("path") or location.get("url", "the download"))
    fetched = Fetched(location=location)
    for name, (data, where) in found.items():
        if name not in chosen and name not in spec.optional:
            continue
        fetched.records[name] = verify(f"{spec.family}/{name}", data, where)
        if spec.images:
            fetched.data[name] = data
        else:
            fetched.lines[name] = split_lines(data)
            fetched.records[name]["lines"] = len(fetched.lines[name])
    return fetched


# --- writing ------------------------------------------------------------------------------------


def _tokens(line: bytes, labelled: bool) -> int:
    text = line.split(b"\t", 1)[-1] if labelled else line
    return len(text.split())


def write_images(path: Path, output: ImageOutput) -> dict[str, Any]:
    """Write one .npz split; return its manifest record (images counted, not lines)."""
    save_image_split(path, output.images, output.labels)
    data = path.read_bytes()
    return {
        "from": output.origin,
        "sha256": _sha256(data),
        "bytes": len(data),
        "images": len(output.images),
        "shape": list(output.images.shape[1:]),
        "mean_pixel": round(float(output.images.mean()), 6),
        "has_labels": output.labels is not None,
    }


def write_output(path: Path, output: Output | ImageOutput, labelled: bool) -> dict[str, Any]:
    """Write one output file; return its manifest record."""
    if isinstance(output, ImageOutput):
        return write_images(path, output)
    data = b"".join(output.lines)
    path.write_bytes(data)
    tokens = sum(_tokens(line, labelled) for line in output.lines)
    return {
        "from": output.origin,
        "sha256": _sha256(data),
        "bytes": len(data),
        "lines": len(output.lines),
        "tokens": tokens,
    }


def _check_target(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise TextVAEError(f"{out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise TextVAEError(f"{out_dir} exists and is not empty; pass --overwrite to replace it")


def _move_into_place(staging: Path, out_dir: Path, overwrite: bool) -> None:
    """Rename the finished staging folder to out_dir, replacing an old one only if allowed."""
    _check_target(out_dir, overwrite)
    old = None
    if out_dir.is_dir():
        if any(out_dir.iterdir()):
            old = staging.with_name(f"{staging.name}.old")
            out_dir.rename(old)
        else:
            out_dir.rmdir()
    try:
        staging.rename(out_dir)
    except OSError:
        if old is not None:
            old.rename(out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


IMAGE_FORMAT = (
    "npz: images uint8 [N, H, W] (0 = background, 255 = ink, grey = 255 x probability of ink), labels int64 [N]"
)


def _manifest(spec: DatasetSpec, fetched: Fetched, outputs: dict[str, Any], built: Built) -> dict[str, Any]:
    text_format = "label<TAB>text" if spec.labelled else "text"
    manifest = {
        "dataset": spec.name,
        "description": spec.description,
        "format": IMAGE_FORMAT if spec.images else text_format,
        "source": fetched.location,
        "inputs": fetched.records,
        "outputs": outputs,
        "notes": [*spec.notes, *built.notes],
        "textvae_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if built.warnings:
        manifest["warnings"] = list(built.warnings)
    return manifest


def prepare_dataset(name: str, out_dir: Path, source: Path | None = None, overwrite: bool = False) -> Path:
    """Prepare dataset `name` into `out_dir` from `source` (a folder or archive) or its original URL.

    Writes train/valid/test.txt (+ vocab.txt where the release has one), or train/valid/test.npz for
    image datasets, and manifest.json; the folder appears complete or not at all. Raises TextVAEError
    on any user-facing failure.
    """
    spec = get_spec(name)
    out_dir = Path(out_dir)
    _check_target(out_dir, overwrite)
    fetched = fetch_inputs(spec, None if source is None else Path(source))
    built = spec.build(fetched.data if spec.images else fetched.lines)  # type: ignore[arg-type]
    built = built if isinstance(built, Built) else Built(dict(built))
    for warning in built.warnings:
        logger.warning("%s: %s", name, warning)
    staging = _make_staging(out_dir)
    try:
        records = {fname: write_output(staging / fname, out, spec.labelled) for fname, out in built.outputs.items()}
        manifest = json.dumps(_manifest(spec, fetched, records, built), indent=2) + "\n"
        (staging / "manifest.json").write_text(manifest, encoding="utf-8")
        _move_into_place(staging, out_dir, overwrite)
    except OSError as err:
        raise TextVAEError(f"{out_dir}: cannot write the prepared files ({err.strerror or err})") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already when it was renamed into place
    logger.info("prepared %s in %s", name, out_dir)
    return out_dir


def _make_staging(out_dir: Path) -> Path:
    """An empty hidden folder beside `out_dir` to write into (not mkdtemp: it keeps the umask's permissions)."""
    staging = out_dir.parent / f".{out_dir.name}.{secrets.token_hex(4)}.tmp"
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
    except OSError as err:
        blocker = next((p for p in out_dir.parents if p.exists()), None)
        reason = f"{blocker} is not a folder" if blocker and not blocker.is_dir() else err.strerror or err
        raise TextVAEError(f"{out_dir}: cannot create the output folder ({reason})") from err
    return staging


import textvae.data.image_datasets  # noqa: E402, F401  (registers mnist and omniglot)
