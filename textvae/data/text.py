"""Text corpora through Hugging Face `datasets`: checked, tokenized with batched `.map`, cached.

One document per line; `format: labeled` reads `label<TAB>text`. Files may be gzipped.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import datasets

from textvae.config import DataConfig
from textvae.data.tokenizers import TextTokenizer, build_tokenizer
from textvae.errors import TextVAEError

logger = logging.getLogger(__name__)

MAX_LINE_CHARS = 1_000_000
SPLITS = ("train", "valid", "test")


@dataclass
class SplitStats:
    """What happened to a split's lines on the way in (logged, and stored with the run)."""

    documents: int = 0
    tokens: int = 0
    truncated: int = 0
    dropped_overlong: int = 0
    skipped_empty: int = 0
    labels: dict[str, int] = field(default_factory=dict)


def file_bytes(path: Path) -> bytes:
    """A file's bytes, gunzipped when it ends in .gz (a one-line error when unreadable)."""
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, zlib.error) as err:  # zlib.error: a damaged .gz
        raise TextVAEError(f"{path}: cannot read ({err})") from err


def split_lines(text: str) -> list[str]:
    """Lines as `datasets`' text loader reads them: broken at universal newlines (\\n, \\r\\n, \\r) only, not
    at the other breaks `str.splitlines` knows (\\x0b, \\x0c, \\x1c-\\x1e, \\x85, \\u2028, \\u2029)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def check_text_file(path: Path, labeled: bool = False) -> int:
    """Check a corpus file before `datasets` sees it; return its number of non-empty lines (errors as
    `read_documents`)."""
    return len(read_documents(path, labeled))


def read_documents(path: Path, labeled: bool = False) -> list[str]:
    """The non-blank lines of a corpus file, read once and checked. Errors (one line, naming file and line):
    missing or empty file, non-UTF-8 bytes, a line over MAX_LINE_CHARS characters, a labeled line without
    exactly one tab."""
    if not path.is_file():
        raise TextVAEError(f"{path}: data file not found")
    raw = file_bytes(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = len(split_lines(raw[: err.start].decode("utf-8")))
        raise TextVAEError(f"{path}:{line}: invalid UTF-8 byte 0x{raw[err.start]:02x}") from err
    documents = []
    for number, line in enumerate(split_lines(text), start=1):
        if len(line) > MAX_LINE_CHARS:
            raise TextVAEError(f"{path}:{number}: line of {len(line):,} characters (limit {MAX_LINE_CHARS:,})")
        if labeled and line.strip() and line.count("\t") != 1:
            raise TextVAEError(f"{path}:{number}: expected 'label<TAB>text', found {line.count(chr(9)) + 1} columns")
        if line.strip():
            documents.append(line)
    if not documents:
        raise TextVAEError(f"{path}: no documents (file is empty)")
    return documents


def split_label(line: str) -> tuple[str, str]:
    """A `label<TAB>text` line as (label, text)."""
    label, text = line.split("\t", 1)
    return label, text


def _split_label(batch: dict[str, list[str]]) -> dict[str, list[str]]:
    labels, texts = zip(*map(split_label, batch["text"])) if batch["text"] else ((), ())
    return {"label": list(labels), "text": list(texts)}


def load_raw_splits(cfg: DataConfig, splits: tuple[str, ...] = SPLITS) -> datasets.DatasetDict:
    """Read the recipe's files with `datasets.load_dataset("text")`, dropping blank lines."""
    files = {name: getattr(cfg, name) for name in splits if getattr(cfg, name) is not None}
    for file in files.values():
        check_text_file(Path(file), labeled=cfg.format == "labeled")
    raw = datasets.load_dataset(
        "text", data_files={k: str(Path(v).resolve()) for k, v in files.items()}, cache_dir=cfg.cache_dir
    )
    for name in raw:
        n_before = len(raw[name])
        raw[name] = raw[name].filter(lambda b: [bool(t.strip()) for t in b["text"]], batched=True)
        if len(raw[name]) < n_before:
            logger.info("%s: skipped %d blank lines", name, n_before - len(raw[name]))
    if cfg.format == "labeled":
        raw = raw.map(_split_label, batched=True)
    if cfg.limit_train is not None and "train" in raw:
        raw["train"] = raw["train"].select(range(min(cfg.limit_train, len(raw["train"]))))
    return raw


class _Encoder:
    """Batched tokenization for `.map` (a class so `datasets` can fingerprint and cache it)."""

    def __init__(self, tokenizer: TextTokenizer, max_length: int | None, overlong: str) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.overlong = overlong

    def __call__(self, batch: dict[str, list[str]]) -> dict[str, list]:
        ids = self.tokenizer.encode_batch(batch["text"])
        limit = self.max_length
        keep = [True] * len(ids)
        truncated = [False] * len(ids)
        if limit is not None:
            for i, seq in enumerate(ids):
                if len(seq) > limit:
                    if self.overlong == "drop":
                        keep[i] = False
                    else:
                        ids[i] = seq[:limit]
                        truncated[i] = True
        return {
            "input_ids": ids,
            "length": [len(s) for s in ids],
            "keep": keep,
            "truncated": truncated,
        }


def tokenize_splits(
    raw: datasets.DatasetDict, tokenizer: TextTokenizer, cfg: DataConfig
) -> tuple[datasets.DatasetDict, dict[str, SplitStats]]:
    """Tokenize every split (cached by `datasets`), apply max length, drop empty encodings."""
    encoder = _Encoder(tokenizer, cfg.max_length, cfg.overlong)
    out = datasets.DatasetDict()
    stats: dict[str, SplitStats] = {}
    for name, split in raw.items():
        encoded = split.map(encoder, batched=True, batch_size=1000, desc=f"tokenize {name}")
        st = SplitStats(truncated=sum(encoded["truncated"]))
        kept = encoded.filter(lambda b: [k and n > 0 for k, n in zip(b["keep"], b["length"])], batched=True)
        st.dropped_overlong = len(encoded) - sum(encoded["keep"])
        st.skipped_empty = len(encoded) - st.dropped_overlong - len(kept)
        st.documents = len(kept)
        st.tokens = int(sum(kept["length"]))
        if "label" in kept.column_names:
            for label in kept["label"]:
                st.labels[label] = st.labels.get(label, 0) + 1
        if st.documents == 0:
            raise TextVAEError(
                f"{getattr(cfg, name)} (data.{name}): no documents left after tokenization "
                f"and max_length={cfg.max_length}"
            )
        if st.truncated or st.dropped_overlong:
            logger.info(
                "%s: %d documents truncated, %d dropped (max_length=%s)",
                name,
                st.truncated,
                st.dropped_overlong,
                cfg.max_length,
            )
        out[name] = kept.remove_columns([c for c in ("keep", "truncated", "text") if c in kept.column_names])
        stats[name] = st
    return out, stats


def _iter_texts(split: datasets.Dataset) -> Iterator[str]:
    for batch in split.iter(batch_size=1000):
        yield from batch["text"]


def prepare_corpus(
    cfg: DataConfig, tokenizer: TextTokenizer | None = None, splits: tuple[str, ...] = SPLITS
) -> tuple[datasets.DatasetDict, TextTokenizer, dict[str, SplitStats]]:
    """Load, (build the tokenizer on train if none is given), tokenize. Returns (splits, tokenizer, stats)."""
    raw = load_raw_splits(cfg, splits)
    if tokenizer is None:
        if "train" not in raw:
            raise TextVAEError("data.train: needed to build the tokenizer")
        tokenizer = build_tokenizer(cfg.tokenizer, _iter_texts(raw["train"]))
    encoded, stats = tokenize_splits(raw, tokenizer, cfg)
    return encoded, tokenizer, stats
