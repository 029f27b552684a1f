"""Tokenizers with fixed special ids: word level (`tokenizers` library), subword (`sentencepiece`), and a
pretrained model's own Hugging Face tokenizer (e.g. GPT-2's BPE).

Special ids are the same for every tokenizer: <pad>=0, <unk>=1, <s>=2, </s>=3.
"""

from __future__ import annotations

import gzip
import json
import logging
import zlib
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
HF_DIR = "hf_tokenizer"  # a pretrained tokenizer's Hugging Face files, inside the saved tokenizer directory


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

        path = _saved_file(directory / WORD_FILE)
        try:
            return cls(Tokenizer.from_file(str(path)))
        except Exception as err:  # noqa: BLE001 - `tokenizers` raises plain Exceptions for unreadable files
            raise TextVAEError(f"{path}: not a readable tokenizer file ({_first_line(err)})") from err

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def words(self) -> list[str]:
        """The vocabulary in id order (special tokens first)."""
        return [self._tok.id_to_token(i) for i in range(self.vocab_size)]

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
        return cls.from_file(_saved_file(directory / SPM_FILE))

    @classmethod
    def from_file(cls, path: Path) -> SentencePieceTokenizer:
        """A trained sentencepiece model file (`data.tokenizer.path`, or a saved run's spm.model)."""
        if not path.is_file():
            raise TextVAEError(f"{path}: sentencepiece model file not found")
        try:
            tok = cls(path.read_bytes())
        except (OSError, RuntimeError) as err:
            raise TextVAEError(f"{path}: not a readable sentencepiece model ({_first_line(err)})") from err
        if tok.vocab_size == 0:
            raise TextVAEError(f"{path}: not a readable sentencepiece model (no pieces)")
        return tok

    @property
    def model_proto(self) -> bytes:
        """The serialised model (what spm.model holds)."""
        return self._proto

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


class PretrainedTokenizer:
    """A pretrained model's Hugging Face (fast) tokenizer behind textvae's special ids.

    Its ordinary ids are shifted past the four specials: textvae id = HF id + 4. Text is encoded without the HF
    special tokens (a literal "<|endoftext|>" in the text is plain text); the pipeline adds <s> and </s>.
    """

    offset = len(SPECIAL_TOKENS)

    def __init__(self, tokenizer) -> None:
        self._hf = tokenizer

    @classmethod
    def from_pretrained(cls, path: str | Path) -> PretrainedTokenizer:
        from transformers import AutoTokenizer

        if not has_hf_tokenizer(Path(path)):
            raise TextVAEError(f"{path}: no Hugging Face tokenizer (tokenizer.json or tokenizer_config.json)")
        try:
            tok = AutoTokenizer.from_pretrained(str(path))
        except Exception as err:  # noqa: BLE001 - damaged JSON files surface as any exception (KeyError, AttributeError...)
            raise TextVAEError(f"{path}: cannot load a Hugging Face tokenizer ({_first_line(err)})") from err
        if not tok.is_fast:
            raise TextVAEError(f"{path}: a fast (tokenizers-backed) Hugging Face tokenizer is needed")
        return cls(tok)

    @classmethod
    def load(cls, directory: Path) -> PretrainedTokenizer:
        return cls.from_pretrained(directory / HF_DIR)

    @property
    def hf(self):
        """The wrapped Hugging Face tokenizer (its own ids, without textvae's shift)."""
        return self._hf

    @property
    def vocab_size(self) -> int:
        return len(self._hf) + self.offset

    def hf_id_map(self) -> list[int]:
        """The HF id of every textvae id: </s> -> eos (or [SEP]), <s> -> bos (or [CLS], else eos), <pad> and <unk>
        -> the HF pad / unk (else eos), ordinary ids shifted back by 4."""
        hf = self._hf
        eos = _first_id(hf.eos_token_id, hf.sep_token_id)
        if eos is None:
            raise TextVAEError("the pretrained tokenizer has no end-of-sequence (eos or sep) token")
        specials = [_first_id(hf.pad_token_id, eos), _first_id(hf.unk_token_id, eos)]
        specials += [_first_id(hf.bos_token_id, hf.cls_token_id, eos), eos]
        return specials + list(range(len(hf)))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        ids = self._hf(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        return [[i + self.offset for i in row] for row in ids]

    def decode(self, ids: Iterable[int]) -> str:
        unk = self._hf.unk_token_id
        hf_ids = [i - self.offset if i >= self.offset else unk for i in _strip_specials(ids)]
        return self._hf.decode([i for i in hf_ids if i is not None])

    def save(self, directory: Path) -> None:
        self._hf.save_pretrained(str(directory / HF_DIR))

    def __reduce__(self):  # picklable for `datasets` fingerprinting and worker processes
        return (PretrainedTokenizer, (self._hf,))


def has_hf_tokenizer(directory: Path) -> bool:
    """Whether a directory holds Hugging Face tokenizer files (AutoTokenizer would otherwise make an empty one)."""
    return any((directory / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json"))


def _first_id(*ids: int | None) -> int | None:
    return next((i for i in ids if i is not None), None)


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
    except (OSError, EOFError, zlib.error) as err:  # zlib.error: a damaged .gz
        raise TextVAEError(f"{path}: cannot read the vocabulary file ({_first_line(err)})") from err
    words = [w.split()[0] for w in words if w]
    if not words:
        raise TextVAEError(f"{path}: vocabulary file is empty")
    return [w for w in words if w not in SPECIAL_TOKENS]


def build_tokenizer(cfg: TokenizerConfig, texts: Iterator[str]) -> TextTokenizer:
    """Build the tokenizer a recipe asks for, from a vocabulary file or by training on `texts`."""
    if cfg.type == "pretrained":
        if cfg.path is None:
            raise TextVAEError("data.tokenizer.path: required for a pretrained tokenizer (a local model directory)")
        tok: TextTokenizer = PretrainedTokenizer.from_pretrained(Path(cfg.path))
    elif cfg.type == "sentencepiece" and cfg.path is not None:
        tok = SentencePieceTokenizer.from_file(Path(cfg.path))
    elif cfg.type == "sentencepiece":
        tok = SentencePieceTokenizer.train(texts, cfg)
    elif cfg.vocab_file is not None:
        words = read_vocab_file(Path(cfg.vocab_file))
        if cfg.vocab_size is not None:
            words = words[: cfg.vocab_size - len(SPECIAL_TOKENS)]
        tok = WordTokenizer.from_vocab(words, lowercase=cfg.lowercase)
    else:
        tok = WordTokenizer.train(texts, cfg)
    logger.info("tokenizer: %s, %d types", cfg.type, tok.vocab_size)
    return tok


SAVED_KINDS: dict[str, type] = {
    "sentencepiece": SentencePieceTokenizer,
    "pretrained": PretrainedTokenizer,
    "word": WordTokenizer,
}


def save_tokenizer(tok: TextTokenizer, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(directory)
    kind = next((name for name, cls in SAVED_KINDS.items() if isinstance(tok, cls)), "word")
    (directory / "tokenizer_type.json").write_text(json.dumps({"type": kind}))


def _first_line(err: BaseException) -> str:
    return str(err).splitlines()[0] if str(err).strip() else type(err).__name__


def _saved_file(path: Path) -> Path:
    """`path`, or a one-line error when a saved tokenizer lacks it."""
    if not path.is_file():
        raise TextVAEError(f"{path}: missing from the saved tokenizer")
    return path


def _saved_kind(meta: Path) -> str:
    """The tokenizer type recorded in tokenizer_type.json; errors name the file."""
    try:
        record = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TextVAEError(f"{meta}: not valid JSON ({_first_line(err)})") from err
    kind = record.get("type") if isinstance(record, dict) else None
    if not isinstance(kind, str) or kind not in SAVED_KINDS:
        raise TextVAEError(f"{meta}: key 'type' must be one of {', '.join(SAVED_KINDS)} (got {kind!r})")
    return kind


def load_tokenizer(directory: Path) -> TextTokenizer:
    """The tokenizer saved in `directory` by `save_tokenizer`; a missing or damaged file is a one-line error."""
    meta = directory / "tokenizer_type.json"
    if not meta.is_file():
        raise TextVAEError(f"{directory}: no saved tokenizer (tokenizer_type.json missing)")
    return SAVED_KINDS[_saved_kind(meta)].load(directory)
