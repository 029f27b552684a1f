"""`textvae data prepare text`: a user's own corpus (one document per line) made ready to train on.

Writes train/valid/test.txt (cut from `--train` by `--split` where no file is given for a split, after a seeded
shuffle), the vocabulary (`vocab.txt`, word level, or `spm.model`, sentencepiece), manifest.json and a complete
`recipe.yaml`: the CPU-scaled LSTM VAE with KL annealing of recipes/yahoo-mini/anneal.yaml, whose data paths are
relative to the recipe's own folder. The folder appears complete or not at all.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from textvae import __version__
from textvae.config import TokenizerConfig, build_recipe
from textvae.data.prepare import Output, _check_target, _make_staging, _move_into_place, _sha256, write_output
from textvae.data.text import file_bytes, read_documents, split_label
from textvae.data.tokenizers import SPECIAL_TOKENS, SentencePieceTokenizer, WordTokenizer
from textvae.errors import TextVAEError

logger = logging.getLogger(__name__)

DEFAULT_SPLIT = (0.9, 0.05, 0.05)
DEFAULT_VOCAB_SIZE = 20_000  # He et al.'s Yahoo and Yelp vocabularies
VOCAB_FILE, SPM_FILE, RECIPE_FILE = "vocab.txt", "spm.model", "recipe.yaml"

# recipes/yahoo-mini/anneal.yaml resolved (tests/test_prepare_text.py checks that the two agree), data aside
CPU_VAE_RECIPE: dict[str, Any] = {
    "model": {
        "type": "lstm_vae",
        "latent_dim": 32,
        "embed_dim": 64,
        "hidden_dim": 128,
        "dropout_in": 0.5,
        "dropout_out": 0.5,
        "init_scale": 0.01,
        "embed_init_scale": 0.1,
    },
    "objective": {
        "type": "elbo",
        "beta": 1.0,
        "kl_schedule": {"type": "linear", "start": 0.1, "end": 1.0, "warmup_epochs": 5},
    },
    "update": {"type": "joint"},
    "optim": {"type": "sgd", "lr": 1.0, "momentum": 0.0, "clip": 5.0},
    "train": {
        "epochs": 30,
        "seed": 783435,
        "device": "cpu",
        "lr_decay": {"enabled": True, "factor": 0.5, "patience": 2, "start_epoch": 10, "max_decays": 3},
    },
    "eval": {"split": "test", "iw_samples": 500},
}


@dataclass(frozen=True)
class CorpusOptions:
    """What `textvae data prepare text` was asked for."""

    train: Path
    valid: Path | None = None
    test: Path | None = None
    split: tuple[float, float, float] = DEFAULT_SPLIT
    labeled: bool = False
    vocab_size: int | None = None  # word level (DEFAULT_VOCAB_SIZE when neither is given)
    sentencepiece: int | None = None  # a sentencepiece vocabulary of this size instead
    seed: int = 0


def parse_split(text: str) -> tuple[float, float, float]:
    """`0.9,0.05,0.05` -> three shares of the --train file (train, valid, test) that add up to 1."""
    try:
        shares = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise TextVAEError(f"--split {text!r}: expected three numbers, e.g. 0.9,0.05,0.05") from None
    if len(shares) != 3 or not all(math.isfinite(s) and s >= 0 for s in shares):
        raise TextVAEError(f"--split {text!r}: expected three shares >= 0 (train,valid,test), e.g. 0.9,0.05,0.05")
    if abs(sum(shares) - 1.0) > 1e-6:
        raise TextVAEError(f"--split {text!r}: the shares add up to {sum(shares):g}, not 1")
    return shares  # type: ignore[return-value]


def split_documents(documents: list[str], options: CorpusOptions) -> dict[str, list[str]]:
    """Train, valid and test documents: the given files, and shares of the shuffled --train file for the rest."""
    given = {name: getattr(options, name) for name in ("valid", "test")}
    order = np.random.default_rng(options.seed).permutation(len(documents))
    shares = dict(zip(("train", "valid", "test"), options.split))
    counts = {name: 0 if given[name] else round(shares[name] * len(documents)) for name in given}
    splits: dict[str, list[str]] = {}
    start = 0
    for name in ("valid", "test"):
        if given[name] is not None:
            splits[name] = read_documents(given[name], options.labeled)
            continue
        if counts[name] == 0:
            raise TextVAEError(
                f"{options.train}: {len(documents):,} documents give no {name} documents at --split "
                f"{','.join(f'{s:g}' for s in options.split)}; pass --{name} FILE or a larger share"
            )
        splits[name] = [documents[i] for i in order[start : start + counts[name]]]
        start += counts[name]
    train = sorted(order[start:])  # the training documents keep the order of the file
    if not train:
        raise TextVAEError(f"{options.train}: no training documents left after the valid and test shares")
    splits["train"] = [documents[i] for i in train]
    return {name: splits[name] for name in ("train", "valid", "test")}


def _texts(documents: list[str], labeled: bool) -> list[str]:
    return [split_label(doc)[1] for doc in documents] if labeled else documents


def vocabulary_file(train_texts: list[str], options: CorpusOptions) -> tuple[str, bytes, dict[str, Any]]:
    """The vocabulary learned from the training documents: its file name, bytes and recipe tokenizer section."""
    if options.sentencepiece is not None:
        cfg = TokenizerConfig(type="sentencepiece", vocab_size=options.sentencepiece)
        model = SentencePieceTokenizer.train(iter(train_texts), cfg)
        return SPM_FILE, model.model_proto, {"type": "sentencepiece", "path": SPM_FILE}
    size = options.vocab_size or DEFAULT_VOCAB_SIZE
    tok = WordTokenizer.train(iter(train_texts), TokenizerConfig(vocab_size=size))
    words = [w for w in tok.words() if w not in SPECIAL_TOKENS]
    return VOCAB_FILE, "".join(f"{w}\n" for w in words).encode("utf-8"), {"type": "word", "vocab_file": VOCAB_FILE}


def corpus_recipe(name: str, tokenizer: dict[str, Any], labeled: bool) -> dict[str, Any]:
    """The ready recipe: CPU_VAE_RECIPE on this corpus (paths relative to the recipe's folder)."""
    data = {
        "train": "train.txt",
        "valid": "valid.txt",
        "test": "test.txt",
        "format": "labeled" if labeled else "text",
        "tokenizer": tokenizer,
        "batch_size": 32,
    }
    description = f"LSTM VAE with KL annealing (recipes/yahoo-mini/anneal.yaml's model and schedule) on {name}"
    return {"name": f"{name}-vae-anneal", "description": description, "data": data, **CPU_VAE_RECIPE}


def _recipe_text(recipe: dict[str, Any], out_dir: Path) -> str:
    header = (
        f"# Written by `textvae data prepare text` (textvae {__version__}). Train it with\n"
        f"#   textvae train {out_dir / RECIPE_FILE} -o runs/{out_dir.name}\n"
        "# Relative data paths resolve against this file's folder. The model is the CPU-scaled LSTM VAE of\n"
        "# recipes/yahoo-mini (embeddings 64, LSTMs 128, latent 32): for a large corpus or a GPU, scale it up\n"
        "# (recipes/yahoo/_base.yaml: 512 / 1024) and set data.max_length if documents are long.\n"
    )
    return header + yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True)


def _lines(documents: list[str]) -> list[bytes]:
    return [f"{doc}\n".encode() for doc in documents]


def prepare_text_corpus(options: CorpusOptions, out_dir: Path, overwrite: bool = False) -> Path:
    """Write the corpus's splits, vocabulary, manifest.json and recipe.yaml into `out_dir` (atomically)."""
    if options.vocab_size is not None and options.sentencepiece is not None:
        raise TextVAEError("--vocab-size and --sentencepiece: give one (word level or sentencepiece), not both")
    out_dir = Path(out_dir)
    _check_target(out_dir, overwrite)
    documents = read_documents(options.train, options.labeled)
    splits = split_documents(documents, options)
    vocab_name, vocab_bytes, tokenizer = vocabulary_file(_texts(splits["train"], options.labeled), options)
    recipe = corpus_recipe(out_dir.name, tokenizer, options.labeled)
    build_recipe(recipe, f"{out_dir / RECIPE_FILE}")  # the recipe validates before anything is written
    staging = _make_staging(out_dir)
    try:
        origin = {name: str(getattr(options, name) or options.train) for name in ("train", "valid", "test")}
        records = {
            f"{name}.txt": write_output(staging / f"{name}.txt", Output(_lines(docs), origin[name]), options.labeled)
            for name, docs in splits.items()
        }
        (staging / vocab_name).write_bytes(vocab_bytes)
        records[vocab_name] = {"from": "train.txt", "sha256": _sha256(vocab_bytes), "bytes": len(vocab_bytes)}
        if vocab_name == VOCAB_FILE:
            records[vocab_name] |= {"lines": vocab_bytes.count(b"\n"), "tokens": vocab_bytes.count(b"\n")}
        (staging / RECIPE_FILE).write_text(_recipe_text(recipe, out_dir), encoding="utf-8")
        manifest = _manifest(options, records)
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        _move_into_place(staging, out_dir, overwrite)
    except OSError as err:
        raise TextVAEError(f"{out_dir}: cannot write the prepared files ({err.strerror or err})") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("prepared %s in %s", options.train, out_dir)
    return out_dir


def _manifest(options: CorpusOptions, outputs: dict[str, Any]) -> dict[str, Any]:
    inputs = {
        str(path): {"sha256": _sha256(file_bytes(path))}
        for path in (options.train, options.valid, options.test)
        if path is not None
    }
    cut = [name for name in ("valid", "test") if getattr(options, name) is None]
    notes = [f"{', '.join(cut)} cut from {options.train} (shares {options.split}, seed {options.seed})"] if cut else []
    return {
        "dataset": "text",
        "description": "a user's corpus, one document per line",
        "format": "label<TAB>text" if options.labeled else "text",
        "source": str(options.train),
        "inputs": inputs,
        "outputs": outputs,
        "notes": notes,
        "textvae_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
