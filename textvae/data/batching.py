"""Length-bucketed batches of token ids with <s>/</s> added and padding masks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from textvae.data.tokenizers import BOS, EOS, PAD


@dataclass
class TextBatch:
    """A padded batch: `tokens` is [B, T] = <s> w_1 .. w_n </s> <pad> ...

    The decoder reads `tokens[:, :-1]` and predicts `tokens[:, 1:]`; `target_mask` marks the
    predicted positions (the words and </s>, never <s> or padding).
    """

    tokens: torch.Tensor
    lengths: torch.Tensor  # words per document, without <s> and </s>
    index: torch.Tensor  # position of each document in its split

    @property
    def data(self) -> torch.Tensor:
        """What the model reads and scores (ImageBatch.data is the images)."""
        return self.tokens

    @property
    def inputs(self) -> torch.Tensor:
        return self.tokens[:, :-1]

    @property
    def targets(self) -> torch.Tensor:
        return self.tokens[:, 1:]

    @property
    def target_mask(self) -> torch.Tensor:
        return self.targets != PAD

    @property
    def encoder_inputs(self) -> torch.Tensor:
        """<s> w_1 .. w_n </s> (the encoder reads the whole document)."""
        return self.tokens

    @property
    def n_predicted(self) -> int:
        return int(self.lengths.sum().item()) + len(self.lengths)

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def to(self, device: torch.device | str) -> TextBatch:
        return TextBatch(self.tokens.to(device), self.lengths.to(device), self.index.to(device))


def collate(examples: Sequence[tuple[int, Sequence[int]]]) -> TextBatch:
    """Pad (index, ids) pairs into a TextBatch."""
    longest = max(len(ids) for _, ids in examples) + 2
    tokens = torch.full((len(examples), longest), PAD, dtype=torch.long)
    for row, (_, ids) in enumerate(examples):
        tokens[row, 0] = BOS
        tokens[row, 1 : len(ids) + 1] = torch.as_tensor(ids, dtype=torch.long)
        tokens[row, len(ids) + 1] = EOS
    lengths = torch.tensor([len(ids) for _, ids in examples], dtype=torch.long)
    index = torch.tensor([i for i, _ in examples], dtype=torch.long)
    return TextBatch(tokens, lengths, index)


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of similar lengths: sort by length (random tie-break), cut, shuffle the batch order.

    With `shuffle=False` the order is deterministic (sorted by length), for evaluation.
    Call `set_epoch` to reshuffle reproducibly.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, shuffle: bool, seed: int = 0, bucket: bool = True):
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.bucket = bucket
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        n = len(self.lengths)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        if self.bucket:
            order = order[np.argsort(self.lengths[order], kind="stable")]
        batches = [order[i : i + self.batch_size].tolist() for i in range(0, n, self.batch_size)]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size


class TokenizedSplit(torch.utils.data.Dataset):
    """In-memory (index, ids) pairs of a tokenized split."""

    def __init__(self, ids: list[list[int]]) -> None:
        self.ids = ids

    @classmethod
    def from_dataset(cls, split, limit: int | None = None) -> TokenizedSplit:
        ids = split["input_ids"] if limit is None else split.select(range(min(limit, len(split))))["input_ids"]
        return cls(list(ids))

    collate = staticmethod(collate)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[int, list[int]]:
        return i, self.ids[i]

    @property
    def lengths(self) -> list[int]:
        return [len(x) for x in self.ids]

    @property
    def n_tokens(self) -> int:
        """Predicted tokens: words plus one </s> per document (<s> is not predicted)."""
        return sum(self.lengths) + len(self.ids)


class RandomBatches:
    """Endless fresh random training batches (the inner loop of aggressive training).

    `similar_lengths=True` takes `batch_size` consecutive documents of the length-sorted split from a
    random start (random documents, little padding); `False` draws documents uniformly (He et al.).
    """

    def __init__(self, split: TokenizedSplit, batch_size: int, seed: int, similar_lengths: bool = True) -> None:
        self.split = split
        self.batch_size = min(batch_size, len(split))
        self.rng = np.random.default_rng((seed, 1))
        self.similar_lengths = similar_lengths
        lengths = np.asarray(split.lengths)
        self.by_length = self.rng.permutation(len(lengths))
        self.by_length = self.by_length[np.argsort(lengths[self.by_length], kind="stable")]

    def __call__(self) -> TextBatch:
        n = len(self.split)
        if self.similar_lengths:
            start = int(self.rng.integers(0, n - self.batch_size + 1))
            indices = self.by_length[start : start + self.batch_size]
        else:
            indices = self.rng.choice(n, self.batch_size, replace=False)
        return self.split.collate([self.split[int(i)] for i in indices])


def make_loader(
    split: TokenizedSplit, batch_size: int, shuffle: bool, seed: int = 0, bucket: bool = True
) -> DataLoader:
    sampler = LengthBucketSampler(split.lengths, batch_size, shuffle=shuffle, seed=seed, bucket=bucket)
    return DataLoader(split, batch_sampler=sampler, collate_fn=split.collate)
