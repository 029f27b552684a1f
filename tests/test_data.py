"""The data pipeline: corpus files (textvae.data.text), tokenizers, length-bucketed batches.

The key property: padded, length-bucketed batches give the same posteriors and likelihoods as
exact-length batches of one document.
"""

from __future__ import annotations

import functools
import gzip
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from textvae.config import DataConfig, ModelConfig, TokenizerConfig
from textvae.data import text as text_module
from textvae.data.batching import LengthBucketSampler, TokenizedSplit, collate, make_loader
from textvae.data.text import check_text_file, load_raw_splits, prepare_corpus
from textvae.data.tokenizers import (
    BOS,
    EOS,
    PAD,
    SPECIAL_TOKENS,
    UNK,
    TextTokenizer,
    WordTokenizer,
    build_tokenizer,
    load_tokenizer,
    save_tokenizer,
)
from textvae.errors import TextVAEError
from textvae.models.model import LatentVariableModel, build_model

CorpusWriter = Callable[..., Path]

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def data_config(tmp_path: Path, train: Path, valid: Path | None = None, **kwargs) -> DataConfig:
    """A DataConfig over `train` (and `valid`, default the same file) with a private datasets cache."""
    return DataConfig(train=str(train), valid=str(valid or train), cache_dir=str(tmp_path / "cache"), **kwargs)


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def data_error(path: Path, labeled: bool = False) -> str:
    """check_text_file must fail with one line naming the file; return the message."""
    with pytest.raises(TextVAEError) as info:
        check_text_file(path, labeled=labeled)
    message = str(info.value)
    assert "\n" not in message, message
    assert str(path) in message, message
    return message


# --- corpus files ---------------------------------------------------------------------------------


def test_plain_and_gzip_files_read_the_same(tmp_path: Path, write_corpus: CorpusWriter):
    plain = write_corpus(tmp_path / "plain" / "train.txt", 50, seed=3, blank_every=7)
    packed = write_corpus(tmp_path / "packed" / "train.txt.gz", 50, seed=3, blank_every=7)
    assert gzip.decompress(packed.read_bytes()) == plain.read_bytes()
    a = list(load_raw_splits(data_config(tmp_path, plain), splits=("train",))["train"]["text"])
    b = list(load_raw_splits(data_config(tmp_path, packed), splits=("train",))["train"]["text"])
    assert a == b == [line for line in plain.read_text().splitlines() if line.strip()]
    assert check_text_file(packed) == check_text_file(plain) == 50


def test_labeled_format_splits_label_and_text(tmp_path: Path):
    path = write_bytes(tmp_path / "train.tsv", b"pos\tthe cat sat\nneg\ta dog\n\n3\tlabel with\tno limit? no\n")
    with pytest.raises(TextVAEError, match=r"train\.tsv:4:"):
        load_raw_splits(data_config(tmp_path, path, format="labeled"), splits=("train",))
    path.write_bytes(b"pos\tthe cat sat\nneg\ta dog\n\n3\tx y z\n")
    raw = load_raw_splits(data_config(tmp_path, path, format="labeled"), splits=("train",))["train"]
    assert list(raw["label"]) == ["pos", "neg", "3"]
    assert list(raw["text"]) == ["the cat sat", "a dog", "x y z"]
    splits, tok, stats = prepare_corpus(data_config(tmp_path, path, format="labeled"), splits=("train",))
    assert stats["train"].labels == {"pos": 1, "neg": 1, "3": 1}
    assert tok.decode(splits["train"]["input_ids"][0]) == "the cat sat"


def test_labeled_line_without_tab_names_file_and_line(tmp_path: Path):
    path = write_bytes(tmp_path / "train.tsv", b"pos\tgood\n\nno tab here\n")
    assert ":3:" in data_error(path, labeled=True)
    assert check_text_file(path, labeled=False) == 2  # fine as plain text


def test_missing_file(tmp_path: Path):
    assert "not found" in data_error(tmp_path / "absent.txt")


@pytest.mark.parametrize("content", [b"", b"\n\n   \n\t\n"], ids=["empty", "blank-lines"])
def test_file_without_documents(tmp_path: Path, content: bytes):
    assert "no documents" in data_error(write_bytes(tmp_path / "train.txt", content))


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_invalid_utf8_names_the_line(tmp_path: Path, gz: bool):
    data = b"one line\ntwo line\nthree \xff line\nfour\n"
    path = write_bytes(tmp_path / ("train.txt.gz" if gz else "train.txt"), gzip.compress(data) if gz else data)
    message = data_error(path)
    assert ":3:" in message and "UTF-8" in message


def test_line_over_the_limit_names_the_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(text_module, "MAX_LINE_CHARS", 20)
    path = write_bytes(tmp_path / "train.txt", b"short\nalso short\n" + b"x" * 21 + b"\nshort\n")
    assert ":3:" in data_error(path)
    path.write_bytes(b"short\n" + b"x" * 20 + b"\n")
    assert check_text_file(path) == 2


def test_truncated_gzip_is_a_one_line_error(tmp_path: Path):
    path = write_bytes(tmp_path / "train.txt.gz", gzip.compress(b"a b c\n" * 100)[:-12])
    data_error(path)


def test_blank_lines_are_skipped(tmp_path: Path):
    path = write_bytes(tmp_path / "train.txt", b"a b\n\n   \nc d e\n\t\nf\n")
    splits, _, stats = prepare_corpus(data_config(tmp_path, path), splits=("train",))
    assert stats["train"].documents == 3
    assert list(splits["train"]["length"]) == [2, 3, 1]


@pytest.mark.parametrize("overlong", ["truncate", "drop"])
def test_max_length(tmp_path: Path, overlong: str):
    path = write_bytes(tmp_path / "train.txt", b"a b\na b c d e\nc\nd d d d\na b c\n")
    cfg = data_config(tmp_path, path, max_length=3, overlong=overlong)
    splits, _, stats = prepare_corpus(cfg, splits=("train",))
    lengths = list(splits["train"]["length"])
    if overlong == "truncate":
        assert lengths == [2, 3, 1, 3, 3]
        assert (stats["train"].truncated, stats["train"].dropped_overlong) == (2, 0)
    else:
        assert lengths == [2, 1, 3]
        assert (stats["train"].truncated, stats["train"].dropped_overlong) == (0, 2)
    assert stats["train"].documents == len(lengths)
    assert stats["train"].tokens == sum(lengths)


# --- tokenizers -----------------------------------------------------------------------------------


def saved_word_ids(tok: TextTokenizer, directory: Path) -> dict[str, int]:
    """The vocabulary as written by save_tokenizer (read back with the `tokenizers` library)."""
    from tokenizers import Tokenizer

    save_tokenizer(tok, directory)
    return Tokenizer.from_file(str(directory / "tokenizer.json")).get_vocab()


def assert_word_specials(tok: TextTokenizer, directory: Path) -> dict[str, int]:
    vocab = saved_word_ids(tok, directory)
    assert [vocab[s] for s in SPECIAL_TOKENS] == [PAD, UNK, BOS, EOS]
    assert sorted(vocab.values()) == list(range(len(vocab))) == list(range(tok.vocab_size))
    return vocab


def test_trained_word_tokenizer(tmp_path: Path):
    texts = ["the cat sat", "the cat ran", "the dog sat", "a bird"]  # the:3 cat:2 sat:2 dog ran a bird:1
    tok = build_tokenizer(TokenizerConfig(), iter(texts))
    vocab = assert_word_specials(tok, tmp_path / "all")
    assert set(vocab) == {*SPECIAL_TOKENS, "the", "cat", "sat", "dog", "ran", "a", "bird"}
    assert vocab["the"] == 4  # most frequent first
    assert tok.encode_batch(["the zebra cat", ""]) == [[4, UNK, vocab["cat"]], []]

    frequent = build_tokenizer(TokenizerConfig(min_frequency=2), iter(texts))
    assert set(assert_word_specials(frequent, tmp_path / "freq")) == {*SPECIAL_TOKENS, "the", "cat", "sat"}
    assert frequent.encode_batch(["a cat"])[0][0] == UNK

    small = build_tokenizer(TokenizerConfig(vocab_size=6), iter(texts))
    assert small.vocab_size == 6
    assert set(assert_word_specials(small, tmp_path / "small")) >= {"the"}


def test_literal_unk_in_corpus_maps_to_unk_id(tmp_path: Path):
    texts = ["<unk> <unk> <unk> x", "x <unk> y", "<s> z"]  # as in PTB, where <unk> is the most frequent word
    tok = build_tokenizer(TokenizerConfig(vocab_size=7), iter(texts))
    vocab = assert_word_specials(tok, tmp_path / "tok")
    assert tok.vocab_size == 7  # the specials do not take the words' places
    assert set(vocab) == {*SPECIAL_TOKENS, "x", "y", "z"}
    assert tok.encode_batch(["x <unk> y never-seen"]) == [[vocab["x"], UNK, vocab["y"], UNK]]


@pytest.mark.parametrize("name", ["vocab.txt", "vocab.txt.gz"])
def test_word_tokenizer_from_vocab_file(tmp_path: Path, name: str):
    # Yahoo's vocab.txt style: its own `_UNK` is an ordinary word; listed specials keep their fixed ids.
    vocab_text = "_UNK\nthe\n<unk>\n\n  cat  \n</s>\ndog 12\n"
    data = vocab_text.encode()
    path = write_bytes(tmp_path / name, gzip.compress(data) if name.endswith(".gz") else data)
    tok = build_tokenizer(TokenizerConfig(vocab_file=str(path)), iter(["ignored text"]))
    vocab = assert_word_specials(tok, tmp_path / "tok")
    assert [vocab[w] for w in ("_UNK", "the", "cat", "dog")] == [4, 5, 6, 7]
    assert tok.vocab_size == 8
    assert tok.encode_batch(["the _UNK cat zebra </s>"]) == [[5, 4, 6, UNK, EOS]]

    small = build_tokenizer(TokenizerConfig(vocab_file=str(path), vocab_size=6), iter([]))
    assert set(assert_word_specials(small, tmp_path / "small")) == {*SPECIAL_TOKENS, "_UNK", "the"}


def test_missing_vocab_file(tmp_path: Path):
    with pytest.raises(TextVAEError, match="absent.txt"):
        build_tokenizer(TokenizerConfig(vocab_file=str(tmp_path / "absent.txt")), iter([]))


def test_word_tokenizer_save_load_round_trip(tmp_path: Path, write_corpus: CorpusWriter):
    texts = write_corpus(tmp_path / "train.txt", 100, seed=1).read_text().splitlines()
    tok = build_tokenizer(TokenizerConfig(lowercase=True), iter(texts))
    save_tokenizer(tok, tmp_path / "saved")
    loaded = load_tokenizer(tmp_path / "saved")
    assert isinstance(loaded, WordTokenizer)
    probe = [*texts[:20], "W1 w2 unseen-word", ""]
    assert loaded.encode_batch(probe) == tok.encode_batch(probe)
    assert loaded.vocab_size == tok.vocab_size
    ids = tok.encode_batch([texts[0]])[0]
    assert loaded.decode([BOS, *ids, EOS, PAD, PAD]) == texts[0]


def test_load_tokenizer_from_empty_directory(tmp_path: Path):
    with pytest.raises(TextVAEError, match="no saved tokenizer"):
        load_tokenizer(tmp_path)


def test_sentencepiece_tokenizer(tmp_path: Path, write_corpus: CorpusWriter):
    import sentencepiece as spm

    texts = write_corpus(tmp_path / "train.txt", 200, seed=2).read_text().splitlines()
    tok = build_tokenizer(TokenizerConfig(type="sentencepiece", vocab_size=60), iter(texts))
    save_tokenizer(tok, tmp_path / "saved")
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "saved" / "spm.model"))
    assert (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()) == (PAD, UNK, BOS, EOS)
    assert tok.vocab_size == sp.get_piece_size() <= 60  # hard_vocab_limit=False: 60 is an upper bound

    probe = [*texts[:20], "w3 \u4e2d w4"]  # an unseen character
    ids = tok.encode_batch(probe)
    assert all(PAD not in seq and BOS not in seq and EOS not in seq for seq in ids)
    assert UNK in ids[-1]
    assert tok.decode([BOS, *ids[0], EOS, PAD]) == texts[0]

    loaded = load_tokenizer(tmp_path / "saved")
    assert loaded.encode_batch(probe) == ids
    assert loaded.vocab_size == tok.vocab_size


def test_sentencepiece_needs_a_vocab_size():
    with pytest.raises(TextVAEError, match="vocab_size"):
        build_tokenizer(TokenizerConfig(type="sentencepiece"), iter(["a b c"]))


# --- batching -------------------------------------------------------------------------------------


def test_collate_adds_bos_eos_and_pads():
    batch = collate([(7, [5, 6, 7]), (2, [8]), (4, [9, 10])])
    assert batch.tokens.tolist() == [[BOS, 5, 6, 7, EOS], [BOS, 8, EOS, PAD, PAD], [BOS, 9, 10, EOS, PAD]]
    assert batch.lengths.tolist() == [3, 1, 2]
    assert batch.index.tolist() == [7, 2, 4]
    assert batch.inputs.shape == batch.targets.shape == (3, 4)
    assert batch.target_mask.sum(1).tolist() == [4, 2, 3]  # words + </s>
    assert batch.n_predicted == 9 == int(batch.target_mask.sum())
    assert len(batch) == 3


def sampler_lengths(n: int = 103, seed: int = 0) -> list[int]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(1, 30, (n,), generator=gen).tolist()


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("batch_size", [1, 8, 10, 200])
def test_sampler_covers_every_index_once(shuffle: bool, batch_size: int):
    lengths = sampler_lengths()
    sampler = LengthBucketSampler(lengths, batch_size, shuffle=shuffle, seed=5)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
        assert all(0 < len(b) <= batch_size for b in batches)


@pytest.mark.parametrize("shuffle", [True, False])
def test_sampler_batches_have_similar_lengths(shuffle: bool):
    lengths = sampler_lengths()
    batches = LengthBucketSampler(lengths, 8, shuffle=shuffle, seed=1).batches()
    spans = sorted((min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in batches)
    for batch in batches:
        assert [lengths[i] for i in batch] == sorted(lengths[i] for i in batch)
    for (_, prev_max), (next_min, _) in zip(spans, spans[1:]):
        assert prev_max <= next_min  # buckets do not overlap: batches are cut from the sorted order


def test_sampler_shuffle_is_reproducible_per_seed_and_epoch():
    lengths = sampler_lengths()

    def epoch_batches(seed: int, epoch: int) -> list[list[int]]:
        sampler = LengthBucketSampler(lengths, 8, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert epoch_batches(1, 0) == epoch_batches(1, 0)
    assert epoch_batches(1, 3) == epoch_batches(1, 3)
    assert epoch_batches(1, 0) != epoch_batches(1, 1)
    assert epoch_batches(1, 0) != epoch_batches(2, 0)


def test_sampler_without_shuffle_is_deterministic():
    lengths = sampler_lengths()
    sampler = LengthBucketSampler(lengths, 8, shuffle=False, seed=1)
    first = list(sampler)
    sampler.set_epoch(4)
    assert list(sampler) == first == list(LengthBucketSampler(lengths, 8, shuffle=False, seed=9))
    flat = [i for b in first for i in b]
    assert [lengths[i] for i in flat] == sorted(lengths)
    unbucketed = LengthBucketSampler(lengths, 8, shuffle=False, bucket=False).batches()
    assert [i for b in unbucketed for i in b] == list(range(len(lengths)))


# --- padding does not change the results ----------------------------------------------------------

VOCAB = 23
TOLERANCE = 1e-5


@functools.cache
def tiny_model(kind: str) -> LatentVariableModel:
    """A small model in eval mode; a large init scale so that any leak of padding would show."""
    cfg = ModelConfig(
        type=kind,
        embed_dim=8,
        hidden_dim=16,
        latent_dim=4,
        dropout_in=0,
        dropout_out=0,
        init_scale=0.3,
        embed_init_scale=1.0,
    )
    torch.manual_seed(0)
    return build_model(cfg, VOCAB).eval()


def fixed_z(n_docs: int, n_samples: int = 3) -> torch.Tensor:
    return torch.randn(n_docs, n_samples, 4, generator=torch.Generator().manual_seed(n_docs))


def assert_padding_invariant(kind: str, docs: list[list[int]], z: torch.Tensor | None) -> None:
    """Each document in a padded batch gives what it gives alone in a batch of one (no padding)."""
    model = tiny_model(kind)
    batch = collate(list(enumerate(docs)))
    with torch.no_grad():
        batch_ll = model.log_likelihood(batch.tokens, z)
        posterior = model.encode(batch.tokens, batch.lengths) if model.has_latent else None
        for i, doc in enumerate(docs):
            alone = collate([(0, doc)])
            assert alone.tokens.shape[1] == len(doc) + 2 and PAD not in alone.tokens
            z_i = None if z is None else z[i : i + 1]
            torch.testing.assert_close(
                batch_ll[i : i + 1], model.log_likelihood(alone.tokens, z_i), atol=TOLERANCE, rtol=0
            )
            if posterior is not None:
                single = model.encode(alone.tokens, alone.lengths)
                torch.testing.assert_close(posterior.mean[i : i + 1], single.mean, atol=TOLERANCE, rtol=0)
                torch.testing.assert_close(posterior.logvar[i : i + 1], single.logvar, atol=TOLERANCE, rtol=0)


documents = st.lists(st.lists(st.integers(4, VOCAB - 1), min_size=1, max_size=12), min_size=1, max_size=6)


@pytest.mark.parametrize("kind", ["lstm_vae", "lstm_lm"])
@settings(max_examples=30, deadline=None, database=None)
@given(docs=documents)
def test_padded_batch_equals_unpadded_documents(kind: str, docs: list[list[int]]):
    assert_padding_invariant(kind, docs, fixed_z(len(docs)) if kind == "lstm_vae" else None)


def test_padding_invariance_check_is_sensitive():
    """Reading the encoder at the padded end (or scoring padding) would change the results noticeably."""
    model = tiny_model("lstm_vae")
    batch = collate([(0, [5, 6, 7, 8, 9, 10]), (1, [11])])
    with torch.no_grad():
        right = model.encode(batch.tokens, batch.lengths).mean[1]
        wrong = model.encode(batch.tokens, torch.full_like(batch.lengths, 6)).mean[1]
        assert (right - wrong).abs().max() > 100 * TOLERANCE
        z = fixed_z(2)
        scored_padding = model.log_likelihood(batch.tokens.masked_fill(batch.tokens == PAD, 4), z)
        assert (scored_padding[1] - model.log_likelihood(batch.tokens, z)[1]).abs().max() > 100 * TOLERANCE


@pytest.mark.parametrize("kind", ["lstm_vae", "lstm_lm"])
def test_length_bucketed_loader_equals_exact_length_batches(kind: str):
    docs = [
        torch.randint(4, VOCAB, (n,), generator=torch.Generator().manual_seed(n)).tolist()
        for n in (1, 9, 3, 3, 14, 2, 7, 1, 11, 5, 6, 4)
    ]
    loader = make_loader(TokenizedSplit(docs), batch_size=5, shuffle=True, seed=3)
    seen: list[int] = []
    for batch in loader:
        assert batch.tokens.shape[1] == int(batch.lengths.max()) + 2
        in_batch = [docs[i] for i in batch.index.tolist()]
        assert_padding_invariant(kind, in_batch, fixed_z(len(in_batch)) if kind == "lstm_vae" else None)
        seen += batch.index.tolist()
    assert sorted(seen) == list(range(len(docs)))
