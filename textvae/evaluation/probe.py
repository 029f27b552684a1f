"""A latent probe: logistic regression on posterior means E[z|x] from n labelled documents (Li et al. 2019,
short Yelp), accuracy on held-out labelled documents, mean ± sd over seeds.

Labelled documents are `label<TAB>text` lines: the run's own train split (held out: its test split), or one
split or file divided in two halves in file order (first half: the labelled pool; second: held out).
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from textvae.data.text import check_text_file, file_bytes, split_lines
from textvae.errors import TextVAEError

DEFAULT_N_LABELS = (100, 500, 1000, 2000)


@dataclass
class LabeledTexts:
    """Documents and their labels, in file order."""

    texts: list[str]
    labels: list[str]
    source: str

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int], source: str) -> LabeledTexts:
        return LabeledTexts([self.texts[i] for i in indices], [self.labels[i] for i in indices], source)

    def halves(self) -> tuple[LabeledTexts, LabeledTexts]:
        """(first half, second half) in file order."""
        middle = len(self) // 2
        return self.subset(range(middle), f"{self.source} (first half)"), self.subset(
            range(middle, len(self)), f"{self.source} (second half)"
        )


def read_labeled(path: Path) -> LabeledTexts:
    """A `label<TAB>text` file's non-empty lines; a line without exactly one tab is a one-line error."""
    check_text_file(path, labeled=True)
    texts, labels = [], []
    for line in split_lines(file_bytes(path).decode("utf-8")):
        if line.strip():
            label, text = line.split("\t")
            if not text.strip():
                raise TextVAEError(f"{path}: a document labelled {label!r} has no text")
            labels.append(label.strip())
            texts.append(text)
    return LabeledTexts(texts, labels, str(path))


def pool_and_held_out(source: str, data_files: dict[str, str | None]) -> tuple[LabeledTexts, LabeledTexts]:
    """The labelled pool and the held-out documents for `--labels-from` train | test | valid | FILE."""
    if source == "train":
        if not data_files.get("test"):
            raise TextVAEError("--labels-from train: the recipe names no test split to measure accuracy on")
        return read_labeled(Path(data_files["train"])), read_labeled(Path(data_files["test"]))
    if source in data_files:
        if not data_files[source]:
            raise TextVAEError(f"--labels-from {source}: the recipe names no {source} split")
        return read_labeled(Path(data_files[source])).halves()
    return read_labeled(Path(source)).halves()


def fit_accuracy(train_z: np.ndarray, train_y: np.ndarray, test_z: np.ndarray, test_y: np.ndarray) -> float:
    """Accuracy on the test codes of a logistic regression fitted on the training codes (L2, C = 1); with a
    single training class, that class is predicted."""
    from sklearn.linear_model import LogisticRegression

    if len(set(train_y.tolist())) < 2:
        return float(np.mean(test_y == train_y[0]))
    classifier = LogisticRegression(max_iter=2000)
    classifier.fit(train_z, train_y)
    return float(classifier.score(test_z, test_y))


def probe(
    encode: Callable[[list[str]], torch.Tensor],
    pool: LabeledTexts,
    held_out: LabeledTexts,
    n_labels: Sequence[int] = DEFAULT_N_LABELS,
    seeds: int = 5,
) -> dict:
    """Probe accuracies: for each seed a random order of the pool, the first n documents of it labelled;
    every accuracy is measured on all of `held_out`. `encode` maps texts to posterior means [N, Z]."""
    if seeds < 1:
        raise TextVAEError(f"--seeds: need at least 1 seed, not {seeds}")
    too_many = [n for n in n_labels if not 0 < n <= len(pool)]
    if too_many:
        raise TextVAEError(f"--n-labels {too_many[0]}: the labelled pool ({pool.source}) has {len(pool)} documents")
    orders = [np.random.default_rng(seed).permutation(len(pool))[: max(n_labels)] for seed in range(seeds)]
    used = sorted({int(i) for order in orders for i in order})  # only these pool documents are encoded
    position = {doc: row for row, doc in enumerate(used)}
    pool_z = encode([pool.texts[i] for i in used]).cpu().double().numpy()
    test_z = encode(held_out.texts).cpu().double().numpy()
    pool_y, test_y = np.array(pool.labels), np.array(held_out.labels)
    results = {}
    for n in n_labels:
        accuracies = []
        for order in orders:
            rows = [position[int(i)] for i in order[:n]]
            accuracies.append(fit_accuracy(pool_z[rows], pool_y[order[:n]], test_z, test_y))
        results[str(n)] = {
            "mean": statistics.fmean(accuracies),
            "sd": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
            "accuracies": accuracies,
        }
    majority = Counter(held_out.labels).most_common(1)[0][1] / len(held_out)
    return {
        "labels_from": pool.source,
        "held_out": held_out.source,
        "held_out_documents": len(held_out),
        "classes": len(set(pool.labels) | set(held_out.labels)),
        "majority_accuracy": majority,  # always predicting the held-out split's most frequent label
        "seeds": seeds,
        "latent_dim": int(test_z.shape[1]),
        "accuracy": results,
    }
