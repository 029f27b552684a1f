"""`textvae data prepare text`: a user's own corpus in, splits + vocabulary + a ready recipe out; recipe-relative
paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import random_sentences, write_text
from typer.testing import CliRunner

from textvae.cli.data import app
from textvae.config import load_recipe, load_recipe_dict, resolve_recipe_paths
from textvae.data.own_corpus import CPU_VAE_RECIPE, CorpusOptions, parse_split, prepare_text_corpus
from textvae.data.tokenizers import SentencePieceTokenizer, build_tokenizer
from textvae.errors import TextVAEError

ROOT = Path(__file__).resolve().parents[1]


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    docs = random_sentences(400, seed=3)
    docs.insert(100, "   ")  # blank lines are not documents
    return write_text(tmp_path / "in" / "my corpus.txt", "\n".join(docs) + "\n")


def test_split_cuts_the_shuffled_file_and_keeps_every_document_once(corpus: Path, tmp_path: Path) -> None:
    out = prepare_text_corpus(CorpusOptions(corpus, split=(0.8, 0.1, 0.1), seed=5), tmp_path / "data" / "mine")
    splits = {name: _lines(out / f"{name}.txt") for name in ("train", "valid", "test")}
    assert [len(v) for v in splits.values()] == [320, 40, 40]
    source = [line for line in _lines(corpus) if line.strip()]
    assert Counter(sum(splits.values(), [])) == Counter(source)
    remaining = iter(source)
    assert all(doc in remaining for doc in splits["train"])  # a subsequence: the file's order is kept
    again = prepare_text_corpus(CorpusOptions(corpus, split=(0.8, 0.1, 0.1), seed=5), tmp_path / "again")
    other = prepare_text_corpus(CorpusOptions(corpus, split=(0.8, 0.1, 0.1), seed=6), tmp_path / "other")
    assert _lines(again / "valid.txt") == splits["valid"] != _lines(other / "valid.txt")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dataset"] == "text" and manifest["outputs"]["train.txt"]["lines"] == 320
    assert "seed 5" in manifest["notes"][0]


def test_given_files_are_used_and_only_missing_splits_are_cut(corpus: Path, tmp_path: Path) -> None:
    test_file = write_text(tmp_path / "test.txt", "\n".join(random_sentences(7, seed=9)) + "\n")
    out = prepare_text_corpus(CorpusOptions(corpus, test=test_file, split=(0.9, 0.1, 0.0)), tmp_path / "d")
    assert _lines(out / "test.txt") == _lines(test_file)
    assert (len(_lines(out / "train.txt")), len(_lines(out / "valid.txt"))) == (360, 40)


def test_word_vocabulary_is_the_most_frequent_training_words(corpus: Path, tmp_path: Path) -> None:
    out = prepare_text_corpus(CorpusOptions(corpus, vocab_size=14), tmp_path / "d")
    words = _lines(out / "vocab.txt")
    counts = Counter(" ".join(_lines(out / "train.txt")).split())
    assert len(words) == 14 - 4  # the 4 special tokens take their fixed ids
    assert min(counts[w] for w in words) >= max(c for w, c in counts.items() if w not in words)
    recipe = load_recipe(out / "recipe.yaml")
    assert recipe.data.tokenizer.vocab_file == str((out / "vocab.txt").resolve())


def test_labeled_corpus_keeps_labels_and_names_a_bad_line(tmp_path: Path) -> None:
    docs = [f"{'pos' if i % 2 else 'neg'}\t{s}" for i, s in enumerate(random_sentences(60, seed=1))]
    good = write_text(tmp_path / "lab.txt", "\n".join(docs) + "\n")
    out = prepare_text_corpus(CorpusOptions(good, labeled=True, split=(0.8, 0.1, 0.1)), tmp_path / "d")
    assert all(line.split("\t")[0] in ("pos", "neg") for line in _lines(out / "test.txt"))
    assert load_recipe(out / "recipe.yaml").data.format == "labeled"
    bad = write_text(tmp_path / "bad.txt", "\n".join([*docs[:4], "no label here", *docs[4:]]) + "\n")
    with pytest.raises(TextVAEError, match=r"bad.txt:5: expected 'label<TAB>text'"):
        prepare_text_corpus(CorpusOptions(bad, labeled=True), tmp_path / "e")
    assert not (tmp_path / "e").exists()


def test_sentencepiece_model_is_written_and_used_by_the_recipe(corpus: Path, tmp_path: Path) -> None:
    out = prepare_text_corpus(CorpusOptions(corpus, sentencepiece=30), tmp_path / "d")
    assert not (out / "vocab.txt").exists()
    cfg = load_recipe(out / "recipe.yaml").data.tokenizer
    assert cfg.type == "sentencepiece" and cfg.path == str((out / "spm.model").resolve())
    built = build_tokenizer(cfg, iter(["ignored: the model file is loaded, not trained"]))
    written = SentencePieceTokenizer.from_file(out / "spm.model")
    assert built.vocab_size == written.vocab_size > 4
    assert built.encode_batch(["w1 w2 w3"]) == written.encode_batch(["w1 w2 w3"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"vocab_size": 100, "sentencepiece": 100}, "give one"),
        ({"split": (0.9, 0.1, 0.0)}, "no test documents at --split 0.9,0.1,0; pass --test FILE"),
        ({"train": Path("missing.txt")}, "missing.txt: data file not found"),
    ],
)
def test_bad_requests_are_one_line_errors_and_write_nothing(
    corpus: Path, tmp_path: Path, options: dict, message: str
) -> None:
    with pytest.raises(TextVAEError, match=message):
        prepare_text_corpus(CorpusOptions(**{"train": corpus, **options}), tmp_path / "d")
    assert not (tmp_path / "d").exists() and not list(tmp_path.glob(".d.*"))


@pytest.mark.parametrize("text", ["0.9,0.1", "0.5,0.3,0.3", "a,b,c", "1.1,-0.1,0"])
def test_bad_split_strings(text: str) -> None:
    with pytest.raises(TextVAEError, match="--split"):
        parse_split(text)


def test_an_existing_folder_is_kept_unless_overwrite(corpus: Path, tmp_path: Path) -> None:
    out = write_text(tmp_path / "d" / "notes.txt", "mine\n").parent
    with pytest.raises(TextVAEError, match="not empty; pass --overwrite"):
        prepare_text_corpus(CorpusOptions(corpus), out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    prepare_text_corpus(CorpusOptions(corpus), out, overwrite=True)
    assert not (out / "notes.txt").exists() and (out / "recipe.yaml").is_file()


def _restricted(values: dict, keys: dict) -> dict:
    """`values` with only the keys of `keys` (recursively)."""
    return {k: _restricted(values[k], v) if isinstance(v, dict) else values[k] for k, v in keys.items()}


def test_the_recipe_is_yahoo_mini_anneal() -> None:
    """The written recipe's model and training are recipes/yahoo-mini/anneal.yaml's (no silent drift)."""
    shipped = load_recipe(ROOT / "recipes" / "yahoo-mini" / "anneal.yaml").model_dump(mode="json", by_alias=True)
    assert _restricted(shipped, CPU_VAE_RECIPE) == CPU_VAE_RECIPE


def test_recipe_paths_resolve_against_the_recipe_folder_only_where_they_exist(tmp_path: Path) -> None:
    folder = tmp_path / "recipes"
    write_text(folder / "mine.txt", "a b\n")
    data = {"data": {"train": "mine.txt", "valid": "data/elsewhere.txt", "tokenizer": {"vocab_file": "/abs/v.txt"}}}
    resolved = resolve_recipe_paths(data, folder)["data"]
    assert resolved["train"] == str((folder / "mine.txt").resolve())
    assert resolved["valid"] == "data/elsewhere.txt" and resolved["tokenizer"]["vocab_file"] == "/abs/v.txt"
    # the shipped recipes' cwd-relative data/... paths are kept as written
    shipped = load_recipe(ROOT / "recipes" / "yahoo-mini" / "vanilla.yaml")
    assert shipped.data.train == load_recipe_dict(ROOT / "recipes" / "yahoo-mini" / "_base.yaml")["data"]["train"]


def test_set_overrides_stay_relative_to_the_working_directory(corpus: Path, tmp_path: Path) -> None:
    out = prepare_text_corpus(CorpusOptions(corpus), tmp_path / "d")
    recipe = load_recipe(out / "recipe.yaml", ["data.test=valid.txt"])
    assert recipe.data.test == "valid.txt" and recipe.data.valid == str((out / "valid.txt").resolve())


def test_cli_rejects_text_options_for_other_datasets_and_requires_train(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["prepare", "yahoo", "--train", "x.txt", "-o", str(tmp_path / "y")])
    assert isinstance(result.exception, TextVAEError) and "--train: only for" in str(result.exception)
    result = runner.invoke(app, ["prepare", "text", "-o", str(tmp_path / "t")])
    assert isinstance(result.exception, TextVAEError) and "--train FILE is required" in str(result.exception)
    assert "relative to its own folder" in " ".join(runner.invoke(app, ["prepare", "--help"]).output.split())


def test_two_commands_from_another_working_directory(corpus: Path, tmp_path: Path) -> None:
    """prepare into data/NAME, then train that recipe from elsewhere: the relative paths find the files."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    textvae = [sys.executable, "-m", "textvae"]
    work = tmp_path / "project"
    work.mkdir()
    prepared = subprocess.run(
        [*textvae, "data", "prepare", "text", "--train", str(corpus), "-o", "data/mine", "--vocab-size", "50"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert prepared.returncode == 0, prepared.stderr
    assert "next: textvae train data/mine/recipe.yaml -o runs/mine" in prepared.stdout
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    sets = ["--set", "train.epochs=1", "--set", "data.limit_train=64", "--set", "train.val_latent_metrics=false"]
    trained = subprocess.run(
        [*textvae, "train", str(work / "data" / "mine" / "recipe.yaml"), "-o", "run", *sets],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert trained.returncode == 0, trained.stderr
    saved = yaml.safe_load((elsewhere / "run" / "recipe.yaml").read_text())["data"]
    assert saved["train"] == str((work / "data" / "mine" / "train.txt").resolve())
    assert json.loads((elsewhere / "run" / "data_stats.json").read_text())["train"]["documents"] == 64
