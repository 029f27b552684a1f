"""Real Yahoo documents for the speed benchmark: the release's vocabulary, length ranges, length-grouped batches.

The He et al. release (`textvae data prepare yahoo --from DIR`) holds `vocab.txt.gz` and the valid and test
splits (one space-tokenized document per line); their documents are pooled and selected by word count.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from textvae.data.batching import TextBatch, collate
from textvae.data.tokenizers import WordTokenizer, read_vocab_file
from textvae.errors import TextVAEError

SPLITS = ("yahoo.valid.txt", "yahoo.test.txt")


@dataclass(frozen=True)
class LengthRange:
    """Documents of `low` to `high` words inclusive (`high` None: no upper bound), named as written."""

    name: str
    low: int
    high: int | None

    def holds(self, n_words: int) -> bool:
        return n_words >= self.low and (self.high is None or n_words <= self.high)


def parse_ranges(spec: str) -> list[LengthRange]:
    """Length ranges from e.g. "60-100,101-": 60 to 100 words, and more than 100 words."""
    ranges = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        low, sep, high = item.partition("-")
        if not sep or not low.isdigit() or (high and not high.isdigit()):
            raise TextVAEError(f"--lengths {item!r}: expected LOW-HIGH or LOW- (word counts)")
        ranges.append(LengthRange(item, int(low), int(high) if high else None))
    if not ranges:
        raise TextVAEError("--lengths: no length range given")
    return ranges


def _open(directory: Path, name: str):
    for path in (directory / f"{name}.gz", directory / name):
        if path.is_file():
            return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")
    raise TextVAEError(f"{directory}: neither {name}.gz nor {name} found")


def load_tokenizer(directory: Path) -> WordTokenizer:
    """The word-level tokenizer of the release's vocabulary (specials first, then the words in file order)."""
    for name in ("vocab.txt.gz", "vocab.txt"):
        if (directory / name).is_file():
            return WordTokenizer.from_vocab(read_vocab_file(directory / name))
    raise TextVAEError(f"{directory}: no vocab.txt.gz or vocab.txt")


def load_documents(directory: Path) -> list[str]:
    """The documents of the valid and test splits, in file order (blank lines skipped)."""
    docs: list[str] = []
    for name in SPLITS:
        with _open(directory, name) as handle:
            docs.extend(line.strip() for line in handle if line.strip())
    return docs


def select(docs: list[str], length: LengthRange) -> list[str]:
    return [doc for doc in docs if length.holds(len(doc.split()))]


def length_batches(ids: list[list[int]], batch_size: int) -> list[TextBatch]:
    """He et al.'s create_data_batch: documents sorted by length (stable), cut into batches of `batch_size`."""
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    return [collate([(i, ids[i]) for i in order[s : s + batch_size]]) for s in range(0, len(order), batch_size)]


def batch_order(n_batches: int, n_steps: int, seed: int = 0) -> list[int]:
    """`n_steps` batch indices: a seeded shuffle of the batches (as a training epoch), repeated as needed."""
    order = np.random.default_rng(seed).permutation(n_batches).tolist()
    return [order[i % n_batches] for i in range(n_steps)]


@dataclass
class RangeData:
    """One length range: its documents as token ids (file order) and their length-grouped batches."""

    length: LengthRange
    ids: list[list[int]]
    batches: list[TextBatch]

    def stats(self) -> dict:
        words = [len(doc) for doc in self.ids]
        return {
            "documents": len(words),
            "batches": len(self.batches),
            "mean_words": round(float(np.mean(words)), 2) if words else 0.0,
            "max_words": max(words, default=0),
            "tokens": sum(words) + len(words),  # predicted: the words and </s>
        }


def load_ranges(directory: Path, ranges: list[LengthRange], batch_size: int) -> tuple[int, list[RangeData]]:
    """The vocabulary size and, per range, its documents and batches (empty ranges are an error)."""
    tokenizer = load_tokenizer(directory)
    docs = load_documents(directory)
    out = []
    for length in ranges:
        chosen = select(docs, length)
        if not chosen:
            raise TextVAEError(f"{directory}: no document of {length.name} words")
        ids = tokenizer.encode_batch(chosen)
        out.append(RangeData(length, ids, length_batches(ids, batch_size)))
    return tokenizer.vocab_size, out
