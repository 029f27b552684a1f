"""`textvae sample | reconstruct | interpolate` and `textvae eval --text-samples` as real subprocesses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import WORDS, textvae
from test_cli import assert_one_line_error, tiny_recipe

from textvae import api
from textvae.config import build_recipe


@pytest.fixture(scope="module")
def trained(tmp_path_factory, write_corpus, torch_single_thread) -> Path:
    """A tiny VAE run (trained in-process, one epoch) and a language-model run beside it."""
    root = tmp_path_factory.mktemp("generate")
    write_corpus(root / "train.txt", 300, seed=1)
    write_corpus(root / "valid.txt", 40, seed=2)
    write_corpus(root / "test.txt", 30, seed=3)
    for name, model in (("vae", {}), ("lm", {"type": "lstm_lm"})):
        recipe = tiny_recipe(root, model=model, train={"epochs": 1}, eval={"iw_samples": 5})
        api.train(build_recipe(recipe, name), root / name)
    return root


def test_sample_prints_n_texts_reproducibly(trained: Path):
    proc = textvae("sample", trained / "vae", "-n", "4", "--max-length", "6", "--seed", "2")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 4 and all(len(line.split()) <= 6 for line in lines)
    again = textvae("sample", trained / "vae", "-n", "4", "--max-length", "6", "--seed", "2", "--jsonl")
    records = [json.loads(line) for line in again.stdout.splitlines()]
    assert [r["text"] for r in records] == lines and [r["index"] for r in records] == [0, 1, 2, 3]


def test_reconstruct_gives_one_line_per_document_and_matches_the_api(trained: Path, tmp_path: Path):
    docs = [" ".join(WORDS[i : i + 4]) for i in (0, 10, 20)]
    source = tmp_path / "docs.txt"
    source.write_text("\n".join([docs[0], "", docs[1], docs[2]]) + "\n")  # blank lines are skipped
    proc = textvae("reconstruct", trained / "vae", source, "--strategy", "beam", "--beam-size", "3", "--jsonl")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["input"] for r in records] == docs
    expected = api.load_run(trained / "vae").reconstruct(docs, strategy="beam", beam_size=3)
    assert [r["reconstruction"] for r in records] == expected


def test_interpolate_prints_each_point_with_its_position(trained: Path, tmp_path: Path):
    story = tmp_path / "b.txt"
    story.write_text(" ".join(WORDS[5:12]) + "\n")
    proc = textvae("interpolate", trained / "vae", " ".join(WORDS[:3]), f"@{story}", "--steps", "5", "--slerp")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["0.00", "0.25", "0.50", "0.75", "1.00"]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("interpolate", "{lm}", "w1", "w2"), ("language model", "interpolate")),
        (("reconstruct", "{vae}", "{empty}"), ("no documents",)),
        (("reconstruct", "{vae}", "{missing}"), ("cannot read",)),
        (("sample", "{vae}", "--top-p", "2"), ("top_p",)),
        (("sample", "{vae}", "--strategy", "nucleus"), ("unknown decoding strategy", "nucleus")),
        (("interpolate", "{vae}", "w1", "w2", "--steps", "1"), ("--steps",)),
        (("sample", "{vae}", "-n", "0"), ("-n 0",)),
        (("sample", "{nowhere}"), ("not a textvae run directory",)),
    ],
)
def test_bad_input_gives_one_line_errors(trained: Path, tmp_path: Path, args, needles):
    (tmp_path / "empty.txt").write_text("\n\n")
    places = {
        "lm": trained / "lm",
        "vae": trained / "vae",
        "empty": tmp_path / "empty.txt",
        "missing": tmp_path / "missing.txt",
        "nowhere": tmp_path,
    }
    assert_one_line_error(textvae(*(arg.format(**places) for arg in args)), *needles)


def test_eval_reports_sample_quality_and_the_bleu_signature(trained: Path, tmp_path: Path):
    out = tmp_path / "eval.json"
    proc = textvae("eval", trained / "vae", "-k", "3", "--text-samples", "12", "--output", out)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(out.read_text())
    assert metrics["sample_count"] == 12
    for key in ("sample_distinct_1", "sample_distinct_2", "sample_self_bleu", "sample_unigram_kl"):
        assert key in metrics
    assert 0 < metrics["sample_distinct_1"] <= 1 and metrics["sample_unigram_kl"] >= 0
    assert "nrefs:1" in proc.stdout and "distinct-1" in proc.stdout
    assert yaml.safe_load((trained / "vae" / "recipe.yaml").read_text())["eval"]["text_samples"] == 0
