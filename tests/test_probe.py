"""The latent probe and latent arithmetic: exact checks with encoders whose codes are known, and a small
autoencoder whose latent carries the label by construction (its two classes use disjoint vocabularies)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import textvae
from test_cli import assert_one_line_error, tiny_recipe

from textvae import api
from textvae.config import build_recipe
from textvae.data.synthetic import labeled_synthetic_splits, synthetic_splits
from textvae.errors import TextVAEError
from textvae.evaluation.probe import LabeledTexts, fit_accuracy, pool_and_held_out, probe, read_labeled
from textvae.generation import arithmetic

# -- labelled files --------------------------------------------------------------------------------------


def test_read_labeled_keeps_file_order_and_names_a_bad_line(tmp_path: Path):
    good = tmp_path / "good.txt"
    good.write_text("pos\tgreat food\n\nneg\tcold soup\npos\tnice staff\n")
    labeled = read_labeled(good)
    assert labeled.labels == ["pos", "neg", "pos"] and labeled.texts[1] == "cold soup"
    first, second = labeled.halves()
    assert (first.labels, second.labels) == (["pos"], ["neg", "pos"])
    bad = tmp_path / "bad.txt"
    bad.write_text("pos\tfine\nno tab here\n")
    with pytest.raises(TextVAEError, match=r"bad.txt:2: expected 'label<TAB>text'"):
        read_labeled(bad)


def test_labels_from_train_uses_the_test_split_as_held_out(tmp_path: Path):
    for name, lines in (("train", ["a\tx", "b\ty"]), ("test", ["a\tz"])):
        (tmp_path / f"{name}.txt").write_text("\n".join(lines) + "\n")
    files = {"train": str(tmp_path / "train.txt"), "valid": None, "test": str(tmp_path / "test.txt")}
    pool, held_out = pool_and_held_out("train", files)
    assert (pool.labels, held_out.labels) == (["a", "b"], ["a"])
    with pytest.raises(TextVAEError, match="names no valid split"):
        pool_and_held_out("valid", files)


# -- the probe with known codes --------------------------------------------------------------------------


def coded(texts: list[str]) -> torch.Tensor:
    """A fake encoder: the first word is the code (two numbers) — its label is linearly separable."""
    return torch.tensor([[float(t.split()[0]), float(t.split()[1])] for t in texts])


def two_clusters(n: int, seed: int, informative: bool = True) -> LabeledTexts:
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        label = rng.choice("AB")
        centre = (3.0 if label == "A" else -3.0) if informative else 0.0
        texts.append(f"{centre + rng.gauss(0, 1):.3f} {rng.gauss(0, 1):.3f}")
        labels.append(label)
    return LabeledTexts(texts, labels, f"clusters-{seed}")


def test_the_probe_separates_informative_codes_and_not_random_ones():
    result = probe(coded, two_clusters(400, 0), two_clusters(300, 1), n_labels=[10, 100], seeds=3)
    assert result["accuracy"]["100"]["mean"] > 0.97 and len(result["accuracy"]["100"]["accuracies"]) == 3
    assert result["classes"] == 2 and result["held_out_documents"] == 300 and result["latent_dim"] == 2
    noise = probe(coded, two_clusters(400, 0, False), two_clusters(300, 1, False), n_labels=[100], seeds=3)
    assert abs(noise["accuracy"]["100"]["mean"] - 0.5) < 0.12  # chance


def test_probe_draws_are_seeded_and_nested():
    pool, held_out = two_clusters(200, 2), two_clusters(100, 3)
    first, again = (probe(coded, pool, held_out, [5, 50], seeds=2) for _ in range(2))
    assert first == again


def test_probe_refuses_more_labels_than_the_pool_has():
    with pytest.raises(TextVAEError, match=r"--n-labels 500: the labelled pool \(clusters-0\) has 100"):
        probe(coded, two_clusters(100, 0), two_clusters(10, 1), n_labels=[500])


def test_a_single_labelled_class_predicts_that_class():
    z = np.zeros((3, 2))
    assert fit_accuracy(z, np.array(["A"] * 3), z, np.array(["A", "B", "A"])) == pytest.approx(2 / 3)


def test_synthetic_labels_are_the_generating_component_of_the_same_lines():
    labeled = labeled_synthetic_splits(n_train=50, n_valid=5, n_test=20)
    plain = synthetic_splits(n_train=50, n_valid=5, n_test=20)
    assert [line for _, line in labeled["test"]] == plain["test"]
    assert {c for c, _ in labeled["train"]} <= {0, 1, 2, 3}


# -- latent arithmetic with known codes ------------------------------------------------------------------


def test_attribute_vector_and_analogy_are_the_mean_differences():
    labeled = LabeledTexts(["1 0", "3 0", "0 2", "0 4"], ["a", "a", "b", "b"], "toy")
    vector = arithmetic.attribute_vector(coded, labeled, "a", "b")
    assert torch.allclose(vector, torch.tensor([0.0, 3.0]) - torch.tensor([2.0, 0.0]))
    assert torch.allclose(arithmetic.shifted_codes(coded, ["2 0"], vector), torch.tensor([[0.0, 3.0]]))
    assert torch.allclose(arithmetic.analogy_code(coded, "1 0", "1 5", "7 7"), torch.tensor([[7.0, 12.0]]))
    with pytest.raises(TextVAEError, match="label 'c': no document of toy has it"):
        arithmetic.label_mean(coded, labeled, "c")


# -- a small autoencoder whose latent carries the label --------------------------------------------------

WORDS = {"a": [f"apple{i}" for i in range(6)], "b": [f"brick{i}" for i in range(6)]}


def two_vocabulary_corpus(root: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        label = rng.choice("ab")
        lines.append(f"{label}\t" + " ".join(rng.choices(WORDS[label], k=rng.randint(3, 6))))
    path = root / f"corpus-{seed}.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def labelled_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("probe")
    files = {name: two_vocabulary_corpus(root, n, seed) for name, n, seed in (("train", 300, 1), ("valid", 40, 2))}
    files["test"] = two_vocabulary_corpus(root, 120, 3)
    recipe = tiny_recipe(
        root,
        data={**{k: str(v) for k, v in files.items()}, "format": "labeled", "batch_size": 20},
        model={"embed_dim": 16, "hidden_dim": 32, "latent_dim": 2, "dropout_in": 0.0, "dropout_out": 0.0},
        objective={"type": "elbo", "beta": 0.0},  # an autoencoder: the latent must carry the vocabulary
        optim={"type": "adam", "lr": 0.01},
        train={"epochs": 6, "val_latent_metrics": False},
    )
    return api.train(build_recipe(recipe, "probe-recipe"), root / "run").directory


def share_of(texts: list[str], label: str) -> float:
    words = [w for text in texts for w in text.split()]
    return sum(w in WORDS[label] for w in words) / max(1, len(words))


def test_probe_transfer_and_analogy_on_a_label_carrying_latent(labelled_run: Path):
    run = api.load_run(labelled_run)
    result = run.probe("train", [20, 100], seeds=3)
    assert result["accuracy"]["20"]["mean"] > 0.9 and result["classes"] == 2
    a_texts = ["apple1 apple2 apple3 apple4", "apple0 apple5 apple5"]
    assert share_of(run.reconstruct(a_texts), "a") > 0.8  # the autoencoder reconstructs its class
    moved = run.transfer(a_texts, "a", "b")
    assert share_of(moved, "b") > 0.8, moved
    answer = run.analogy("apple1 apple2 apple3", "brick1 brick2 brick3", "apple4 apple0 apple5")
    assert share_of([answer], "b") > 0.8, answer


def test_probe_and_transfer_commands(labelled_run: Path, tmp_path: Path):
    proc = textvae("probe", labelled_run, "--n-labels", "20,50", "--seeds", "2")
    assert proc.returncode == 0, proc.stderr
    saved = json.loads((labelled_run / "probe.json").read_text())
    assert set(saved["accuracy"]) == {"20", "50"} and "written to" in proc.stdout
    page = tmp_path / "report.html"
    reported = textvae("report", labelled_run, "-o", page, "--no-generation")
    assert reported.returncode == 0, reported.stderr
    for path in (page, page.with_suffix(".md")):
        assert f"n = 20: {saved['accuracy']['20']['mean']:.3f}" in path.read_text(), path
    moved = textvae("transfer", labelled_run, "apple1 apple2 apple3", "--from-label", "a", "--to-label", "b")
    assert moved.returncode == 0, moved.stderr
    assert share_of(moved.stdout.splitlines(), "b") > 0.8, moved.stdout
    assert_one_line_error(textvae("probe", labelled_run, "--n-labels", "ten"), "--n-labels 'ten'")
    assert_one_line_error(
        textvae("transfer", labelled_run, "apple1", "--from-label", "a", "--to-label", "zzz"), "label 'zzz'"
    )
