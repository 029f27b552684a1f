"""Tokenizers with fixed special ids: word level (`tokenizers` library) and subword (`sentencepiece`).

Special ids are the same for every tokenizer: <pad>=0, <unk>=1, <s>=2, </s>=3.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol

from textvae.config import TokenizerConfig
from textvae.errors import TextVAEError

logger = logging.getLogger(__name__)

PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIAL_TOKENS = ["<pad>", "<unk>", "<s>", "</s>"]
WORD_FILE = "tokenizer.json"
SPM_FILE = "spm.model"


class TextTokenizer(Protocol):
    """What the data pipeline and models need from a tokenizer."""

    @property
    def vocab_size(self) -> int: ...

    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def save(self, directory: Path) -> None: ...


def _strip_specials(ids: Iterable[int]) -> list[int]:
    out = []
    for i in ids:
        if i == EOS:
            break
        if i not in (PAD, BOS):
            out.append(int(i))
    return out


class WordTokenizer:
    """Whitespace word-level tokenizer backed by a `tokenizers.Tokenizer` with a WordLevel model."""

    def __init__(self, tokenizer) -> None:
        self._tok = tokenizer

    @classmethod
    def from_vocab(cls, words: Iterable[str], lowercase: bool = False) -> WordTokenizer:
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

        vocab: dict[str, int] = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
        for word in words:
            vocab.setdefault(word, len(vocab))
        tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        if lowercase:
            tok.normalizer = normalizers.Lowercase()
        return cls(tok)

    @classmethod
    def train(cls, texts: Iterator[str], cfg: TokenizerConfig) -> WordTokenizer:
        """Count words with a WordLevelTrainer, then rebuild the vocabulary with the fixed special ids.

        (The trainer itself moves `<unk>` when the corpus contains the literal token, as PTB does, and
        such literal specials would take words' places under its `vocab_size`: the cut is made here.)
        """
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

        counter = Tokenizer(models.WordLevel(unk_token="<unk>"))
        counter.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        if cfg.lowercase:
            counter.normalizer = normalizers.Lowercase()
        trainer = trainers.WordLevelTrainer(
            vocab_size=10**9,  # cut below, after removing literal special tokens
            min_frequency=cfg.min_frequency,
            special_tokens=SPECIAL_TOKENS,
            show_progress=False,
        )
        counter.train_from_iterator(texts, trainer=trainer)
        by_rank = sorted(counter.get_vocab().items(), key=lambda item: item[1])
        words = [w for w, _ in by_rank if w not in SPECIAL_TOKENS]
        if cfg.vocab_size is not None:
            words = words[: cfg.vocab_size - len(SPECIAL_TOKENS)]
        return cls.from_vocab(words, lowercase=cfg.lowercase)

    @classmethod
    def load(cls, directory: Path) -> WordTokenizer:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(directory / WORD_FILE)))

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [enc.ids for enc in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self._tok.id_to_token(i) for i in _strip_specials(ids))

    def save(self, directory: Path) -> None:
        self._tok.save(str(directory / WORD_FILE))


class SentencePieceTokenizer:
    """Subword tokenizer backed by a `sentencepiece` model trained with the fixed special ids."""

    def __init__(self, model_proto: bytes) -> None:
        import sentencepiece as spm

        self._proto = model_proto
        self._sp = spm.SentencePieceProcessor(model_proto=model_proto)

    @classmethod
    def train(cls, texts: Iterator[str], cfg: TokenizerConfig) -> SentencePieceTokenizer:
        import io

        import sentencepiece as spm

        if cfg.vocab_size is None:
            raise TextVAEError("data.tokenizer.vocab_size: required for a sentencepiece tokenizer")
        buffer = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=texts,
            model_writer=buffer,
            vocab_size=cfg.vocab_size,
            model_type=cfg.model_type,
            character_coverage=cfg.character_coverage,
            pad_id=PAD,
            unk_id=UNK,
            bos_id=BOS,
            eos_id=EOS,
            normalization_rule_name="nmt_nfkc_cf" if cfg.lowercase else "nmt_nfkc",
            hard_vocab_limit=False,
            minloglevel=2,
        )
        return cls(buffer.getvalue())

    @classmethod
    def load(cls, directory: Path) -> SentencePieceTokenizer:
        return cls((directory / SPM_FILE).read_bytes())

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self._sp.encode(texts)

    def decode(self, ids: Iterable[int]) -> str:
        return self._sp.decode(_strip_specials(ids))

    def save(self, directory: Path) -> None:
        (directory / SPM_FILE).write_bytes(self._proto)

    def __reduce__(self):  # picklable for `datasets` fingerprinting and worker processes
        return (SentencePieceTokenizer, (self._proto,))


def read_vocab_file(path: Path) -> list[str]:
    """One token per line (plain or .gz); surrounding whitespace is ignored, blank lines skipped."""
    if not path.is_file():
        raise TextVAEError(f"{path}: vocabulary file not found")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            words = [line.strip() for line in handle]
    except UnicodeDecodeError as err:
        raise TextVAEError(f"{path}: vocabulary file is not UTF-8 text") from err
    words = [w.split()[0] for w in words if w]
    if not words:
        raise TextVAEError(f"{path}: vocabulary file is empty")
    return [w for w in words if w not in SPECIAL_TOKENS]


def build_tokenizer(cfg: TokenizerConfig, texts: Iterator[str]) -> TextTokenizer:
    """Build the tokenizer a recipe asks for, from a vocabulary file or by training on `texts`."""
    if cfg.type == "sentencepiece":
        tok: TextTokenizer = SentencePieceTokenizer.train(texts, cfg)
    elif cfg.vocab_file is not None:
        words = read_vocab_file(Path(cfg.vocab_file))
        if cfg.vocab_size is not None:
            words = words[: cfg.vocab_size - len(SPECIAL_TOKENS)]
        tok = WordTokenizer.from_vocab(words, lowercase=cfg.lowercase)
    else:
        tok = WordTokenizer.train(texts, cfg)
    logger.info("tokenizer: %s, %d types", cfg.type, tok.vocab_size)
    return tok


def save_tokenizer(tok: TextTokenizer, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(directory)
    kind = "sentencepiece" if isinstance(tok, SentencePieceTokenizer) else "word"
    (directory / "tokenizer_type.json").write_text(json.dumps({"type": kind}))


def load_tokenizer(directory: Path) -> TextTokenizer:
    meta = directory / "tokenizer_type.json"
    if not meta.is_file():
        raise TextVAEError(f"{directory}: no saved tokenizer (tokenizer_type.json missing)")
    kind = json.loads(meta.read_text())["type"]
    loader = SentencePieceTokenizer.load if kind == "sentencepiece" else WordTokenizer.load
    return loader(directory)
