"""Hostile input: random bytes, huge lines, empty files, wrong column counts, damaged or mismatched checkpoints,
random recipes, unwritable or full output folders.

The standard: a one-line TextVAEError naming the file (and line or key), a non-zero exit, and no damage (nothing
half-written, no existing output replaced without --overwrite). The properties (hypothesis) drive the in-process
entry points; hand-written cases also run the real CLI, through typer's CliRunner (`textvae` turns a TextVAEError
into `error: <message>` and exit 1) or, for a full disk (a file-size limit that must not touch pytest), a subprocess.
Runs are made without training (a saved initial model), so they load exactly as trained runs do.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from itertools import count
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from conftest import random_sentences
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_cli import tiny_recipe
from test_huggingface import gpt2_tokenizer
from test_image_training import image_recipe, write_images
from typer.testing import CliRunner, Result

from textvae import api
from textvae.config import DataConfig, Recipe, TokenizerConfig, build_recipe, load_recipe, save_recipe
from textvae.data import prepare
from textvae.data import text as text_module
from textvae.data.splits import evaluation_split, training_splits
from textvae.data.text import check_text_file, load_raw_splits, prepare_corpus
from textvae.data.tokenizers import build_tokenizer, save_tokenizer
from textvae.errors import TextVAEError
from textvae.models.images import PIXEL_VALUES
from textvae.models.model import build_model

pytestmark = pytest.mark.usefixtures("torch_single_thread")

# Hypothesis examples per property, by kind of hostile input (TEXTVAE_HYPOTHESIS_SCALE=k tries k times as many,
# for a deeper search than CI's).
_SCALE = int(os.environ.get("TEXTVAE_HYPOTHESIS_SCALE", "1"))
EXAMPLES: dict[str, int] = {
    "corpus: arbitrary bytes (plain, gzip, fake .gz)": 80,
    "corpus: line-break and special-token soup": 80,
    "labeled corpus: wrong column counts": 60,
    "corpus: huge lines (limit patched to 64)": 100,
    "recipe: arbitrary bytes": 150,
    "recipe: YAML-ish text": 150,
    "recipe: JSON-ish dicts": 200,
    "checkpoint: damaged model, config and tokenizer files": 120,
    "checkpoint: config.json with values of any type": 60,
}
EXAMPLES = {kind: n * _SCALE for kind, n in EXAMPLES.items()}
FULL_DISK_BYTES = 500  # file-size limit of a "full disk": every output below is larger
SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}


# --- shared helpers ---------------------------------------------------------------------------------


def assert_names(err: BaseException, *needles: str) -> str:
    """A TextVAEError of one line that contains every needle; returns its message."""
    assert isinstance(err, TextVAEError), f"{type(err).__name__}: {err}"
    message = str(err)
    assert "\n" not in message and "\r" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def user_error(call: Callable[[], Any], *needles: str) -> str:
    """`call()` must raise a one-line TextVAEError containing every needle; returns its message."""
    with pytest.raises(Exception) as info:
        call()
    return assert_names(info.value, *needles)


def assert_cli_error(result: Result, *needles: str) -> str:
    """What `textvae` prints for this result: exit 1 and one line `error: <message>` with every needle."""
    assert result.exit_code != 0, result.output
    assert result.exception is not None and not isinstance(result.exception, SystemExit), result.output
    return assert_names(result.exception, *needles)


def tree(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` (hidden ones too) with its content."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    """Names in `folder`, hidden temporary files and folders included."""
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def cli() -> Callable[..., Result]:
    """`cli(*args)`: the `textvae` command in-process (typer's CliRunner)."""
    from textvae.cli.app import _register_commands, app

    if not app.registered_commands:
        _register_commands()
    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """`fresh(name)`: a new path in a new folder each call (examples never share a file or a datasets cache key)."""
    root = tmp_path_factory.mktemp("scratch")
    numbers = count()

    def fresh(name: str) -> Path:
        folder = root / str(next(numbers))
        folder.mkdir()
        return folder / name

    return fresh


# --- tiny runs, made without training ----------------------------------------------------------------


def text_recipe(root: Path, **changes: dict[str, Any]) -> dict[str, Any]:
    """test_cli's tiny recipe over root/{train,valid,test}.txt, smaller still; `changes` update sections."""
    small = {
        "data": {"batch_size": 32},
        "model": {"embed_dim": 8, "hidden_dim": 8, "latent_dim": 2},
        "train": {"epochs": 1, "max_steps": 2, "val_latent_metrics": False},
        "eval": {"iw_samples": 2, "recon_bleu": False},
    }
    sections = {k: {**small.get(k, {}), **changes.get(k, {})} for k in {*small, *changes}}
    return {**tiny_recipe(root, **sections), "name": "hostile"}


def make_run(run_dir: Path, recipe: Recipe) -> Path:
    """A run directory as `textvae train` leaves it (recipe.yaml, model/ with weights and tokenizer), untrained."""
    import torch

    (run_dir / "model").mkdir(parents=True)
    save_recipe(recipe, run_dir / api.RECIPE_FILE)
    vocab = PIXEL_VALUES
    if recipe.data.format != "images":
        lines = Path(recipe.data.train).read_text().splitlines()
        tokenizer = build_tokenizer(recipe.data.tokenizer, iter(lines))
        save_tokenizer(tokenizer, run_dir / "model")
        vocab = tokenizer.vocab_size
    torch.manual_seed(0)
    build_model(recipe.model, vocab).save_pretrained(run_dir / "model")
    return run_dir


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    for name, n, seed in (("train", 120, 1), ("valid", 20, 2), ("test", 12, 3)):
        (root / f"{name}.txt").write_text("\n".join(random_sentences(n, seed)) + "\n")
    return root


@pytest.fixture(scope="module")
def text_run(corpus: Path) -> Path:
    return make_run(corpus / "run", build_recipe(text_recipe(corpus), "text run"))


@pytest.fixture(scope="module")
def small_vocab_run(corpus: Path) -> Path:
    """The same recipe with a 20-type vocabulary: its tokenizer does not fit `text_run`'s model."""
    recipe = text_recipe(corpus, data={"tokenizer": {"vocab_size": 20}})
    return make_run(corpus / "small-vocab-run", build_recipe(recipe, "small vocab"))


@pytest.fixture(scope="module")
def runs_by_tokenizer(corpus: Path, text_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`text_run` and the same model with a sentencepiece and with a pretrained (GPT-2-like) tokenizer."""
    hf_tokenizer = tmp_path_factory.mktemp("hf-tokenizer")
    gpt2_tokenizer().save_pretrained(hf_tokenizer)
    tokenizers = {"sentencepiece": {"type": "sentencepiece", "vocab_size": 30}, "pretrained": {}}
    tokenizers["pretrained"] = {"type": "pretrained", "path": str(hf_tokenizer)}
    runs = {"word": text_run}
    for kind, tokenizer in tokenizers.items():
        recipe = build_recipe(text_recipe(corpus, data={"tokenizer": tokenizer}), kind)
        runs[kind] = make_run(corpus / f"{kind}-run", recipe)
    return runs


@pytest.fixture(scope="module")
def image_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_images(tmp_path_factory.mktemp("images"), (("train", 20), ("valid", 10), ("test", 10)))
    recipe = image_recipe(root, "bernoulli_vae")
    return make_run(root / "run", build_recipe(recipe, "image run"))


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hugging Face model directory (a tiny random GPT-2): config.json and model.safetensors, not textvae's."""
    from transformers import GPT2Config, GPT2LMHeadModel

    directory = tmp_path_factory.mktemp("gpt2")
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, n_positions=16, vocab_size=30)).save_pretrained(directory)
    return directory


def test_the_made_runs_load_as_trained_runs_do(runs_by_tokenizer: dict[str, Path], image_run: Path):
    for run in [*runs_by_tokenizer.values(), image_run]:
        loaded = api.load_run(run)
        assert loaded.model.config.architecture == loaded.recipe.model.type
        assert loaded.is_image_model == (run == image_run)


def copy_run(run: Path, fresh: Callable[[str], Path]) -> Path:
    target = fresh(run.name)
    shutil.copytree(run, target)
    return target


@pytest.fixture
def fresh_run(scratch) -> Callable[[Path], Path]:
    """`fresh_run(run)`: a copy of a run to damage."""
    return lambda run: copy_run(run, scratch)


# --- (a) arbitrary bytes as a corpus ------------------------------------------------------------------


def data_config(path: Path, labeled: bool = False) -> DataConfig:
    fmt = "labeled" if labeled else "text"
    return DataConfig(train=str(path), valid=str(path), format=fmt, cache_dir=str(path.parent / "cache"))


def read_corpus(path: Path, labeled: bool = False) -> int:
    """Documents of the file after the whole pipeline (check, `datasets`, tokenizer built on it)."""
    _, _, stats = prepare_corpus(data_config(path, labeled), splits=("train",))
    return stats["train"].documents


@settings(max_examples=EXAMPLES["corpus: arbitrary bytes (plain, gzip, fake .gz)"], **SETTINGS)
@given(data=st.binary(max_size=400), packing=st.sampled_from(["plain", "gzip", "fake .gz"]), labeled=st.booleans())
def test_any_bytes_as_a_corpus_are_read_or_refused_naming_the_file(scratch, data: bytes, packing: str, labeled: bool):
    path = scratch("train.txt" if packing == "plain" else "train.txt.gz")
    path.write_bytes(gzip.compress(data) if packing == "gzip" else data)
    try:
        documents = read_corpus(path, labeled)
    except Exception as err:  # noqa: BLE001 - the property: only a one-line TextVAEError naming the file
        assert_names(err, str(path))
    else:
        assert 0 < documents <= check_text_file(path, labeled)


SOUP = ["w1", "w2", "<unk>", "<s>", "</s>", "<pad>", " ", "\t", "\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c"]
SOUP += ["\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\ufeff", "é", "😀"]


@settings(max_examples=EXAMPLES["corpus: line-break and special-token soup"], **SETTINGS)
@given(pieces=st.lists(st.sampled_from(SOUP), max_size=40))
@example(pieces=["w1", "\x0b", "w1"])  # str.splitlines breaks there, `datasets` does not
def test_every_line_break_splits_documents_the_same_in_check_and_datasets(scratch, pieces: list[str]):
    path = scratch("train.txt")
    path.write_text("".join(pieces), encoding="utf-8")
    try:
        checked = check_text_file(path)
    except TextVAEError as err:
        assert_names(err, str(path), "no documents")
        return
    assert read_corpus(path) == checked  # `datasets` sees exactly the documents the check counted


# --- (d) wrong column counts in labeled files ---------------------------------------------------------

FIELD = st.lists(st.sampled_from(["w1", "w2", "pos", "neg", "3"]), max_size=3).map(" ".join)


@settings(max_examples=EXAMPLES["labeled corpus: wrong column counts"], **SETTINGS)
@given(rows=st.lists(st.lists(FIELD, min_size=1, max_size=4), min_size=1, max_size=8))
def test_labeled_rows_with_other_column_counts_name_the_line(scratch, rows: list[list[str]]):
    path = scratch("train.tsv")
    lines = ["\t".join(fields) for fields in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    bad = next(((n, line) for n, line in enumerate(lines, 1) if line.strip() and line.count("\t") != 1), None)
    if bad is not None:
        number, line = bad
        user_error(
            lambda: check_text_file(path, labeled=True), f"{path}:{number}:", f"{line.count(chr(9)) + 1} columns"
        )
        return
    kept = [line.split("\t") for line in lines if line.strip()]
    if not kept:
        user_error(lambda: check_text_file(path, labeled=True), str(path), "no documents")
        return
    raw = load_raw_splits(data_config(path, labeled=True), splits=("train",))["train"]
    assert list(raw["label"]) == [label for label, _ in kept]
    assert list(raw["text"]) == [text for _, text in kept]


# --- (e) huge lines -----------------------------------------------------------------------------------


@settings(max_examples=EXAMPLES["corpus: huge lines (limit patched to 64)"], **SETTINGS)
@given(lengths=st.lists(st.integers(0, 130), min_size=1, max_size=12))
def test_a_line_over_the_limit_is_refused_naming_the_first_such_line(scratch, lengths: list[int]):
    path = scratch("train.txt")
    path.write_text("".join("x" * n + "\n" for n in lengths), encoding="utf-8")
    with mock.patch.object(text_module, "MAX_LINE_CHARS", 64):
        over = next((i for i, n in enumerate(lengths, 1) if n > 64), None)
        if over is not None:
            user_error(lambda: check_text_file(path), f"{path}:{over}:", f"line of {lengths[over - 1]:,} characters")
        elif any(lengths):
            assert check_text_file(path) == sum(n > 0 for n in lengths)
        else:
            user_error(lambda: check_text_file(path), str(path), "no documents")


def test_the_real_line_limit(tmp_path: Path):
    path = tmp_path / "train.txt"
    limit = text_module.MAX_LINE_CHARS
    path.write_bytes(b"short\n" + b"y" * limit + b"\n")
    assert check_text_file(path) == 2
    path.write_bytes(b"short\n" + b"y" * (limit + 1) + b"\nshort\n")
    user_error(lambda: check_text_file(path), f"{path}:2:", f"line of {limit + 1:,} characters")


# --- empty and damaged corpus files, hand-written ------------------------------------------------------

EMPTY_CONTENTS = {"empty": b"", "blank lines": b"\n \n\t\n", "empty gzip": gzip.compress(b"")}
DAMAGED_GZIP = gzip.compress(b"")[:10] + b"\xff" * 16  # a gzip header, then an invalid deflate block (zlib.error)


@pytest.mark.parametrize("split", ["train", "valid", "test"])
@pytest.mark.parametrize("content", EMPTY_CONTENTS, ids=list(EMPTY_CONTENTS))
def test_an_empty_file_for_any_split_names_that_file(corpus: Path, tmp_path: Path, split: str, content: str):
    empty = tmp_path / ("empty.txt.gz" if content == "empty gzip" else "empty.txt")
    empty.write_bytes(EMPTY_CONTENTS[content])
    recipe = build_recipe(text_recipe(corpus, data={split: str(empty)}), "empty split")
    if split == "test":
        tokenizer = build_tokenizer(recipe.data.tokenizer, iter(random_sentences(20)))
        user_error(lambda: evaluation_split(recipe, tokenizer, "test", None), str(empty), "no documents")
    else:
        user_error(lambda: training_splits(recipe), str(empty), "no documents")


def test_a_damaged_gzip_corpus_names_the_file(tmp_path: Path):
    path = tmp_path / "train.txt.gz"
    path.write_bytes(DAMAGED_GZIP)
    user_error(lambda: check_text_file(path), str(path), "cannot read")
    vocab = tmp_path / "vocab.txt.gz"
    vocab.write_bytes(DAMAGED_GZIP)
    config = TokenizerConfig(vocab_file=str(vocab))
    user_error(lambda: build_tokenizer(config, iter([])), str(vocab), "cannot read")


def test_eval_of_a_run_whose_test_file_is_empty(cli, text_run: Path, fresh_run: Callable[[Path], Path], tmp_path):
    run = fresh_run(text_run)
    empty = tmp_path / "test.txt"
    empty.write_bytes(b"")
    recipe = load_recipe(run / api.RECIPE_FILE, [f"data.test={empty}"])
    save_recipe(recipe, run / api.RECIPE_FILE)
    assert_cli_error(cli("eval", run, "-k", "2"), str(empty), "no documents")
    assert not (run / "eval.json").exists()


# --- (b) recipes: arbitrary bytes, YAML-ish text, JSON-ish dicts --------------------------------------

KEY_NAMES = ["data", "model", "train", "eval", "objective", "update", "optim", "name", "base", "type", "format"]
KEY_NAMES += ["train", "valid", "test", "tokenizer", "latent_dim", "epochs", "prior", "lambda", "kl_schedule", "svi"]
KEYS = st.sampled_from(KEY_NAMES) | st.text(alphabet="abcdefgh_", min_size=1, max_size=6)
LEAVES = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
VALUES = st.recursive(
    LEAVES, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4), max_leaves=20
)
YAML_ALPHABET = list(":-[]{}!&*#|>'\"\n \t,?%@`.0123456789") + ["data", "train", "model", "base", "~", "null"]


def check_recipe_file(path: Path, data: Any = None) -> None:
    """load_recipe gives a Recipe or a one-line error naming the file; a key error names a key that was written."""
    try:
        recipe = load_recipe(path)
    except Exception as err:  # noqa: BLE001 - the property: only a one-line TextVAEError naming the file
        message = assert_names(err, str(path))
    else:
        assert isinstance(recipe, Recipe)
        return
    match = re.search(r": key '([^']*)': unknown key", message)
    if match and isinstance(data, dict):
        node: Any = data
        for part in match.group(1).split("."):
            assert isinstance(node, dict) and part in node, (match.group(1), data)
            node = node[part]


@settings(max_examples=EXAMPLES["recipe: arbitrary bytes"], **SETTINGS)
@given(data=st.binary(max_size=300))
def test_any_bytes_as_a_recipe(scratch, data: bytes):
    path = scratch("recipe.yaml")
    path.write_bytes(data)
    check_recipe_file(path)


@settings(max_examples=EXAMPLES["recipe: YAML-ish text"], **SETTINGS)
@given(pieces=st.lists(st.sampled_from(YAML_ALPHABET), max_size=60))
def test_yaml_ish_text_as_a_recipe(scratch, pieces: list[str]):
    path = scratch("recipe.yaml")
    path.write_text("".join(pieces), encoding="utf-8")
    check_recipe_file(path)


@settings(max_examples=EXAMPLES["recipe: JSON-ish dicts"], **SETTINGS)
@given(data=st.dictionaries(KEYS, VALUES, max_size=6), as_json=st.booleans())
def test_any_mapping_as_a_recipe_names_the_unknown_key_it_holds(scratch, data: dict, as_json: bool):
    path = scratch("recipe.json" if as_json else "recipe.yaml")
    path.write_text(json.dumps(data) if as_json else yaml.safe_dump(data), encoding="utf-8")
    check_recipe_file(path, data)


MINIMAL = "data: {train: a.txt, valid: b.txt}\n"


def laughs(levels: int, indent: str = "") -> str:
    """YAML anchors l0..l{levels}, each a list of 9 of the one before: 9**(levels + 1) values once expanded."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * 9)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "".join(f"{indent}{line}\n" for line in lines)


LAUGHS = laughs(9)  # a billion laughs: never to be expanded
BAD_RECIPES: dict[str, tuple[str, list[str]]] = {  # recipe text -> what the one error line names
    "billion laughs": (LAUGHS + MINIMAL, ["aliases are expanded"]),
    "billion laughs in a free-form section": (
        MINIMAL
        + "model:\n  type: hf_vae\n  huggingface:\n    encoder_config: {}\n    decoder_config:\n"
        + laughs(9, indent="      "),
        ["aliases are expanded"],
    ),
    "6,561 laughs as a value (quoted in part)": (laughs(3) + MINIMAL + "name: *l3\n", ["key 'name'"]),
    "a key with a line break": (MINIMAL + 'model: {"hid\\nden": 3}\n', ["key 'model.hid\\nden'", "unknown key"]),
    "nested 5000 deep": (MINIMAL + "name: " + "[" * 5000 + "]" * 5000 + "\n", ["nested too deeply"]),
    "an integer of 5000 digits": (MINIMAL + "model: {latent_dim: " + "9" * 5000 + "}\n", ["invalid YAML value"]),
    "a python tag": ("!!python/object/apply:os.system [echo]\n", ["invalid YAML"]),
    "a NUL character": (MINIMAL + "name: \x00\n", ["invalid YAML"]),
    "wrong type of section": (MINIMAL + "objective: wae_mmd\n", ["key 'objective'"]),
    "unknown union tag": (MINIMAL + "update: {type: [joint]}\n", ["key 'update'"]),
    "NaN where a size goes": (MINIMAL + "model: {latent_dim: .nan}\n", ["key 'model.latent_dim'"]),
    "a mapping of non-string keys": (MINIMAL + "train: {1: 2}\n", ["key 'train.1'"]),
    "a base that is not text": ("base: binary.yaml\n" + MINIMAL, ["binary.yaml", "UTF-8"]),
}


@pytest.mark.parametrize("case", BAD_RECIPES)
def test_hostile_recipes_are_one_line_errors(tmp_path: Path, case: str):
    text, needles = BAD_RECIPES[case]
    (tmp_path / "binary.yaml").write_bytes(b"\x7fELF\x02\x01\xff\xfe\x00")
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    message = user_error(lambda: load_recipe(path), *needles)
    assert len(message) < 600, message


BAD_OVERRIDES = ["model.latent_dim=[", "model.latent_dim={a: 1", "name=!!python/name:os.system", "x=" + "9" * 5000]


@pytest.mark.parametrize("item", BAD_OVERRIDES, ids=["open list", "open map", "python tag", "huge int"])
def test_a_set_value_that_is_not_yaml_names_the_override(tmp_path: Path, item: str):
    path = tmp_path / "recipe.yaml"
    path.write_text(MINIMAL, encoding="utf-8")
    user_error(lambda: load_recipe(path, [item]), "--set", "invalid YAML value")


def test_cli_train_with_a_recipe_bomb(cli, tmp_path: Path):
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text(LAUGHS + MINIMAL + "description: *l9\n", encoding="utf-8")
    out = tmp_path / "run"
    assert_cli_error(cli("train", recipe, "-o", out), str(recipe), "aliases are expanded")
    assert not out.exists()


# --- (c) damaged checkpoint files ---------------------------------------------------------------------

DAMAGEABLE = [  # (tokenizer of the run, file under model/)
    *(("word", name) for name in ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_type.json")),
    ("sentencepiece", "spm.model"),
    ("pretrained", "hf_tokenizer/tokenizer.json"),
    ("pretrained", "hf_tokenizer/tokenizer_config.json"),
]
POSITION = st.floats(0, 1, exclude_max=True)
DAMAGE = st.one_of(
    st.tuples(st.just("truncate"), POSITION),
    st.tuples(st.just("flip"), st.lists(st.tuples(POSITION, st.integers(0, 255)), min_size=1, max_size=8)),
    st.tuples(st.just("replace"), st.binary(max_size=300)),
)


def damaged(data: bytes, damage: tuple[str, Any]) -> bytes:
    kind, how = damage
    if kind == "truncate":
        return data[: int(how * len(data))]
    if kind == "replace":
        return how
    flipped = bytearray(data)
    for position, value in how:
        flipped[int(position * len(flipped))] = value
    return bytes(flipped)


def check_load_run(run: Path) -> None:
    """load_run loads, or refuses in one line naming the model folder; it never writes into the run."""
    before = tree(run)
    try:
        loaded = api.load_run(run)
    except Exception as err:  # noqa: BLE001 - the property: only a one-line TextVAEError naming the file
        assert_names(err, str(run / "model"))
    else:
        assert loaded.tokenizer is not None and loaded.tokenizer.vocab_size == loaded.model.config.vocab_size
    assert tree(run) == before


@settings(max_examples=EXAMPLES["checkpoint: damaged model, config and tokenizer files"], **SETTINGS)
@given(target=st.sampled_from(DAMAGEABLE), damage=DAMAGE)
@example(target=("pretrained", "hf_tokenizer/tokenizer.json"), damage=("replace", b"0"))  # once an AttributeError
def test_a_damaged_checkpoint_file_loads_or_is_refused_naming_it(runs_by_tokenizer, scratch, target, damage):
    kind, name = target
    run = copy_run(runs_by_tokenizer[kind], scratch)
    path = run / "model" / name
    path.write_bytes(damaged(path.read_bytes(), damage))
    check_load_run(run)


@settings(max_examples=EXAMPLES["checkpoint: config.json with values of any type"], **SETTINGS)
@given(changes=st.dictionaries(st.sampled_from(["architecture", "vocab_size", "latent_dim", "hidden_dim"]), LEAVES))
def test_config_json_with_values_of_any_type(text_run, scratch, changes: dict[str, Any]):
    run = copy_run(text_run, scratch)
    config = run / "model" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), **changes}), encoding="utf-8")
    check_load_run(run)


CONFIG_CHANGES: dict[str, dict[str, Any]] = {
    "format_version a string": {"format_version": "two"},
    "vocab_size a string": {"vocab_size": "many"},
    "prior an int": {"prior": 3},
    "posterior unknown": {"posterior": "flow"},
    "no model_type": {"model_type": None},
    "architecture unknown": {"architecture": "resnet_vae"},
}


@pytest.mark.parametrize("case", CONFIG_CHANGES)
def test_config_json_values_of_the_wrong_kind(text_run, fresh_run, case: str):
    run = fresh_run(text_run)
    config = run / "model" / "config.json"
    record = {**json.loads(config.read_text()), **CONFIG_CHANGES[case]}
    config.write_text(json.dumps({k: v for k, v in record.items() if v is not None}), encoding="utf-8")
    user_error(lambda: api.load_run(run), str(run / "model"))


def test_a_checkpoint_with_a_renamed_tensor_is_refused(text_run, fresh_run):
    run = fresh_run(text_run)
    weights = run / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes().replace(b"decoder.output.weight", b"decoder.output.weigxt", 1))
    user_error(lambda: api.load_run(run), "model.safetensors")


# --- vocabulary and model-type mismatches, hand-written ------------------------------------------------


def test_a_tokenizer_from_another_run_is_refused(cli, text_run, small_vocab_run, fresh_run):
    run = fresh_run(text_run)
    for name in ("tokenizer.json", "tokenizer_type.json"):
        shutil.copy(small_vocab_run / "model" / name, run / "model" / name)
    user_error(lambda: api.load_run(run), str(run / "model"), "20 types", "different runs")
    assert_cli_error(cli("eval", run), "different runs")
    assert not (run / "eval.json").exists()


def test_a_tokenizer_of_another_kind_names_the_missing_file(text_run, fresh_run):
    run = fresh_run(text_run)
    (run / "model" / "tokenizer_type.json").write_text('{"type": "sentencepiece"}')
    user_error(lambda: api.load_run(run), str(run / "model" / "spm.model"), "missing")
    (run / "model" / "tokenizer_type.json").write_text('{"type": "bpe"}')
    user_error(lambda: api.load_run(run), "tokenizer_type.json", "'bpe'")


def swap_model(run: Path, model_dir: Path) -> Path:
    shutil.rmtree(run / "model")
    shutil.copytree(model_dir, run / "model")
    return run


OTHER_MODELS: dict[str, tuple[str, str, list[str]]] = {  # (run, model/ taken from, what the error names)
    "image model in a text run": ("text", "image", ["config.json", "'bernoulli_vae'", "lstm_vae"]),
    "text model in an image run": ("image", "text", ["config.json", "'lstm_vae'", "bernoulli_vae"]),
    "Hugging Face GPT-2 as the model": ("text", "gpt2", ["config.json", "model_type 'gpt2'", "not a textvae model"]),
    "another textvae model type": ("transformer", "text", ["config.json", "'lstm_vae'", "transformer_vae"]),
}


@pytest.mark.parametrize("case", OTHER_MODELS)
def test_a_model_of_another_type_is_refused_naming_its_config(
    case: str, text_run, image_run, gpt2_dir, fresh_run, corpus: Path
):
    run_kind, model_kind, needles = OTHER_MODELS[case]
    runs = {"text": text_run, "image": image_run}
    if run_kind == "transformer":
        run = fresh_run(text_run)
        recipe = load_recipe(run / api.RECIPE_FILE, ["model.type=transformer_vae"])
        save_recipe(recipe, run / api.RECIPE_FILE)
    else:
        run = fresh_run(runs[run_kind])
    sources = {"text": text_run / "model", "image": image_run / "model", "gpt2": gpt2_dir}
    swap_model(run, sources[model_kind])
    user_error(lambda: api.load_run(run), str(run / "model" / "config.json"), *needles)


def test_cli_on_hugging_face_and_image_directories(cli, gpt2_dir, image_run, text_run, fresh_run, tmp_path):
    assert_cli_error(cli("sample", gpt2_dir), str(gpt2_dir), "not a textvae run directory")
    run = swap_model(fresh_run(text_run), gpt2_dir)
    assert_cli_error(cli("sample", run), "model_type 'gpt2'")
    text_file = tmp_path / "docs.txt"
    text_file.write_text("w1 w2\n")
    result = cli("reconstruct", image_run, text_file, "--grid", tmp_path / "grid.png")
    assert_cli_error(result, str(text_file), "not a numpy .npz")
    assert_cli_error(cli("reconstruct", text_run, image_run.parent / "test.npz"), "test.npz", "cannot read")
    assert leftovers(tmp_path) == ["docs.txt"]


# --- unwritable output folders -------------------------------------------------------------------------


def unwritable_folders(tmp_path: Path) -> list[Path]:
    """Folders no one (root included) can write into: under a regular file, and /sys where it refuses root."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    folders = [blocker / "out"]
    if Path("/sys").is_dir():
        try:
            os.rmdir(tempfile.mkdtemp(dir="/sys"))
        except OSError:
            folders.append(Path("/sys/textvae-hostile-test"))
    return folders


def test_unwritable_outputs_are_one_line_errors(
    cli, text_run, corpus: Path, ptb_source: Path, tmp_path: Path, unverified_ptb
):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(text_recipe(corpus)))
    for folder in unwritable_folders(tmp_path):
        assert_cli_error(cli("train", recipe, "-o", folder / "run"), str(folder / "run"), "cannot create")
        result = cli("data", "prepare", "ptb", "--from", ptb_source, "-o", folder)
        assert_cli_error(result, str(folder), "cannot create")
        assert_cli_error(cli("report", text_run, "-o", folder / "r.html", "--no-generation"), str(folder / "r.html"))
        assert_cli_error(cli("eval", text_run, "--output", folder / "e.json"), str(folder / "e.json"))
        assert not folder.exists()
    assert (tmp_path / "a-file").read_text() == "not a folder\n"
    assert not (text_run / "eval.json").exists()


# --- existing outputs are kept -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ptb_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local folder with small ptb.{train,valid,test}.txt (known digests are lifted where it is read)."""
    folder = tmp_path_factory.mktemp("ptb-source")
    for split, n in (("train", 300), ("valid", 30), ("test", 30)):
        (folder / f"ptb.{split}.txt").write_text("\n".join(random_sentences(n, len(split))) + "\n")
    return folder


@pytest.fixture
def unverified_ptb(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in prepare.KNOWN_DIGESTS if k.startswith("ptb/")]:
        monkeypatch.delitem(prepare.KNOWN_DIGESTS, key)


def test_outputs_are_not_replaced_without_overwrite(cli, corpus: Path, ptb_source: Path, tmp_path, unverified_ptb):
    out = tmp_path / "prepared"
    out.mkdir()
    (out / "mine.txt").write_text("keep me\n")
    assert_cli_error(cli("data", "prepare", "ptb", "--from", ptb_source, "-o", out), str(out), "--overwrite")
    assert tree(out) == {"mine.txt": b"keep me\n"}
    a_file = tmp_path / "run-is-a-file"
    a_file.write_text("keep me too\n")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(text_recipe(corpus)))
    assert_cli_error(cli("train", recipe, "-o", a_file), str(a_file), "not a directory")
    assert a_file.read_text() == "keep me too\n"
    assert leftovers(tmp_path) == ["prepared", "recipe.yaml", "run-is-a-file"]


# --- a full disk: a file-size limit in a subprocess (writes fail with EFBIG) ----------------------------

FULL_DISK = """
import resource, runpy, signal, sys
limit = int(sys.argv.pop(1))
from textvae.data import prepare
for key in [k for k in prepare.KNOWN_DIGESTS if k.startswith("ptb/")]:
    del prepare.KNOWN_DIGESTS[key]  # the test's small ptb files
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.argv[0] = "textvae"
runpy.run_module("textvae", run_name="__main__", alter_sys=True)
"""


def textvae_on_a_full_disk(*args: str | Path, limit: int = FULL_DISK_BYTES) -> subprocess.CompletedProcess[str]:
    """`textvae ARGS` where no file can grow past `limit` bytes (stdout and stderr are pipes: not limited)."""
    env = {k: v for k, v in os.environ.items() if k != "TEXTVAE_DEBUG"}
    env.update(OMP_NUM_THREADS="1", COLUMNS="200")
    command = [sys.executable, "-c", FULL_DISK, str(limit), *map(str, args)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=180, check=False)


def assert_one_line_failure(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "File too large" in lines[0], proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


pytest_full_disk = pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file-size limits")


@pytest.fixture(scope="module")
def trained(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(recipe file, a run trained from it in-process): the datasets cache is warm for the subprocesses."""
    root = tmp_path_factory.mktemp("trained")
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(text_recipe(corpus)))
    api.train(load_recipe(recipe), root / "run")
    api.evaluate_run(api.load_run(root / "run"), "test", iw_samples=2)  # the test split's cache too
    return recipe, root / "run"


@pytest_full_disk
def test_full_disk_eval_and_report_keep_the_old_outputs(fresh_run, trained, tmp_path: Path):
    run = fresh_run(trained[1])
    (run / "eval.json").write_bytes(b'{"old": true}\n')
    before = tree(run)
    assert_one_line_failure(textvae_on_a_full_disk("eval", run, "-k", "2"), str(run / "eval.json"))
    assert tree(run) == before
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "r.html").write_text("old html\n")
    (reports / "r.md").write_text("old markdown\n")
    proc = textvae_on_a_full_disk("report", run, "-o", reports / "r.html", "--no-generation")
    assert_one_line_failure(proc, str(reports / "r.html"))
    assert tree(reports) == {"r.html": b"old html\n", "r.md": b"old markdown\n"}


@pytest_full_disk
def test_full_disk_prepare_keeps_the_old_folder(ptb_source: Path, tmp_path: Path, unverified_ptb):
    out = prepare.prepare_dataset("ptb", tmp_path / "ptb", source=ptb_source)
    before = tree(out)
    proc = textvae_on_a_full_disk("data", "prepare", "ptb", "--from", ptb_source, "-o", out, "--overwrite")
    assert_one_line_failure(proc, str(out))
    assert tree(out) == before
    assert leftovers(tmp_path) == ["ptb"]


@pytest_full_disk
def test_full_disk_train_fails_in_one_line_and_leaves_no_files(trained, tmp_path: Path):
    recipe, _ = trained
    run = tmp_path / "run"
    assert_one_line_failure(textvae_on_a_full_disk("train", recipe, "-o", run), str(run / api.RECIPE_FILE))
    assert not run.exists() or leftovers(run) == []  # at most an empty folder, which train may reuse


@pytest_full_disk
def test_full_disk_while_saving_the_model(trained, tmp_path: Path):
    recipe, run = trained
    limit = (run / "model" / "model.safetensors").stat().st_size - 1  # recipe, stats and logs fit; weights do not
    target = tmp_path / "run"
    assert_one_line_failure(textvae_on_a_full_disk("train", recipe, "-o", target, limit=limit), str(target))
    assert not target.exists() or leftovers(target) == []


BAD_BASES = ["", "\n", " ", "missing.yaml", ".", ".."]


@pytest.mark.parametrize("base", BAD_BASES)
def test_a_base_that_is_no_recipe_file_names_the_recipe(tmp_path: Path, base: str):
    """Found by the mapping property in CI: `base: ''` resolved to the folder, `base: "\\n"` broke the line."""
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"base": base}), encoding="utf-8")
    user_error(lambda: load_recipe(path), str(path), "base")


# --- what each kind of hostile input is tried with -------------------------------------------------------


def inputs_by_kind() -> dict[str, int]:
    """Inputs tried per kind: hypothesis examples (at most) plus hand-written cases."""
    return {
        **EXAMPLES,
        "hand-written: empty files (split x content, + CLI eval)": 3 * len(EMPTY_CONTENTS) + 1,
        "hand-written: huge line at the real limit": 2,
        "hand-written: damaged gzip corpus and vocabulary": 2,
        "hand-written: hostile recipes": len(BAD_RECIPES) + 1,
        "hand-written: a base that is no recipe file": len(BAD_BASES),
        "hand-written: --set values that are not YAML": len(BAD_OVERRIDES),
        "hand-written: config.json values of the wrong kind": len(CONFIG_CHANGES),
        "hand-written: renamed tensor": 1,
        "hand-written: vocabulary or tokenizer kind mismatch (API + CLI)": 4,
        "hand-written: another model type (API + CLI)": len(OTHER_MODELS) + 4,
        "hand-written: unwritable output (4 commands x each unwritable folder)": 4 * 2,
        "hand-written: existing output without --overwrite": 2,
        "hand-written: full disk (eval, report, prepare, train, train saving weights)": 5,
    }


INPUTS_TRIED: dict[str, int] = inputs_by_kind()
