"""Length-bucketed batches of token ids with <s>/</s> added and padding masks; a prefetching iterator."""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

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

    modality: ClassVar[str] = "text"

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
    Call `set_epoch` to reshuffle reproducibly (and to start part-way, resuming an epoch). With `multiple_of`
    k (data-parallel processes) a last batch's size is cut to a multiple of k (dropped when under k), so each
    process gets an equal share.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        bucket: bool = True,
        multiple_of: int = 1,
    ):
        if batch_size % multiple_of:
            raise ValueError(f"batch size {batch_size} is not a multiple of {multiple_of}")
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.bucket = bucket
        self.multiple_of = multiple_of
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Epoch `epoch`'s order; iteration begins at its batch `start` (batches before it were trained)."""
        self.epoch = epoch
        self.start = start

    def batches(self) -> list[list[int]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        n = len(self.lengths)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        if self.bucket:
            order = order[np.argsort(self.lengths[order], kind="stable")]
        batches = [order[i : i + self.batch_size].tolist() for i in range(0, n, self.batch_size)]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        k = self.multiple_of
        return batches if k == 1 else [b[: len(b) - len(b) % k] for b in batches if len(b) >= k]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches()[self.start :])

    def __len__(self) -> int:
        full, last = divmod(len(self.lengths), self.batch_size)
        return full + int(last >= self.multiple_of)


class TokenizedSplit(torch.utils.data.Dataset):
    """In-memory (index, ids) pairs of a tokenized split."""

    random_collate = False  # collating draws no random numbers (ImageSplit's dynamic binarisation does)

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

    def fingerprint(self) -> str:
        """A digest of the token ids (a resumed run checks it trains on the same data)."""
        digest = hashlib.sha256()
        digest.update(np.asarray(self.lengths, dtype=np.int64).tobytes())
        digest.update(np.fromiter((i for ids in self.ids for i in ids), dtype=np.int64).tobytes())
        return digest.hexdigest()


class RandomBatches:
    """Endless fresh random training batches (the inner loop of aggressive training).

    `similar_lengths=True` takes `batch_size` consecutive documents of the length-sorted split from a
    random start (random documents, little padding); `False` draws documents uniformly (He et al.).
    The size is cut to a multiple of `multiple_of` (data-parallel processes) when the split is smaller.
    """

    def __init__(
        self, split: TokenizedSplit, batch_size: int, seed: int, similar_lengths: bool = True, multiple_of: int = 1
    ) -> None:
        size = min(batch_size, len(split))
        if size < multiple_of:
            raise ValueError(f"{len(split)} documents cannot be shared by {multiple_of} processes")
        self.split = split
        self.batch_size = size - size % multiple_of
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

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]


def make_loader(
    split: TokenizedSplit, batch_size: int, shuffle: bool, seed: int = 0, bucket: bool = True, multiple_of: int = 1
) -> DataLoader:
    """Batches of `split` in the sampler's order. The loader draws a seed for worker processes from its own
    generator each time it is iterated, not from the global random state: starting an epoch, or resuming
    in the middle of one, leaves the training's random stream alone."""
    sampler = LengthBucketSampler(split.lengths, batch_size, shuffle, seed, bucket, multiple_of)
    return DataLoader(split, batch_sampler=sampler, collate_fn=split.collate, generator=torch.Generator())


def transfer(batch: Any, device: torch.device) -> Any:
    """A batch (a dataclass of tensors) on `device`; to CUDA through pinned memory, not blocking the host."""
    if device.type != "cuda":
        return batch.to(device)
    with torch.cuda.device(device):  # a worker thread's current device is cuda:0 otherwise
        moved = {f.name: getattr(batch, f.name).pin_memory().to(device, non_blocking=True) for f in fields(batch)}
    return replace(batch, **moved)


class _Failure:
    """The producer's exception, carried to the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()


class Prefetcher:
    """Iterates `batches` in a background thread, `depth` items ahead, each passed through `prepare`
    (sharding, the copy to the device), so the training step does not wait for collation.

    The items and their order are those of `batches`; an exception raised while producing is raised by the
    consuming loop. Leaving the loop early stops the thread.
    """

    def __init__(self, batches: Iterable, prepare: Callable[[Any], Any] = lambda b: b, depth: int = 2) -> None:
        self.batches = batches
        self.prepare = prepare
        self.depth = depth

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator:
        items: queue.Queue = queue.Queue(maxsize=self.depth)
        stop = threading.Event()
        thread = threading.Thread(target=self._produce, args=(items, stop), name="prefetch", daemon=True)
        thread.start()
        try:
            while (item := items.get()) is not _END:
                if isinstance(item, _Failure):
                    raise item.error
                yield item
        finally:
            stop.set()
            thread.join()

    def _produce(self, items: queue.Queue, stop: threading.Event) -> None:
        try:
            for batch in self.batches:
                if not _put(items, self.prepare(batch), stop):
                    return
            _put(items, _END, stop)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, which raises it
            _put(items, _Failure(error), stop)


def _put(items: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put `item` once there is room; False when the consumer has stopped first."""
    while not stop.is_set():
        try:
            items.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False
