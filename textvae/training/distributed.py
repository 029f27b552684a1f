"""Data-parallel training over the processes `torchrun` starts (gloo on CPU, NCCL on CUDA).

Every rank holds the same model, reads the same global batches (same seed, same sampler) and trains on an
equal share of each (`shard`); update rules average the gradients over ranks (`average_gradients`) before
clipping and stepping, so the parameters stay identical everywhere. Explicit averaging rather than
DistributedDataParallel: aggressive training takes encoder-only gradients with `torch.autograd.grad` and
SA-VAE backpropagates through unrolled SVI, neither of which fires DDP's backward hooks.

In a single process (no torchrun, or one process) there is no process group and everything here is a no-op.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from textvae import noise
from textvae.errors import TextVAEError

B = TypeVar("B")
BUCKET_ELEMENTS = 1 << 24  # elements per coalesced collective (64 MB of fp32)


def launched() -> bool:
    """Whether torchrun started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Processes in the group (1 without one)."""
    return dist.get_world_size() if initialized() else 1


def rank() -> int:
    """This process's rank: the group's, else torchrun's RANK (so the CLI can quiet other ranks early), else 0."""
    return dist.get_rank() if initialized() else int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Rank 0: the one process that logs, shows progress and writes the run directory."""
    return rank() == 0


def local_device(device: str) -> torch.device:
    """The device this process trains on: the recipe's, except that under torchrun "cuda" is cuda:LOCAL_RANK."""
    chosen = torch.device(device)
    if not launched() or chosen.type != "cuda":
        return chosen
    if chosen.index is not None:
        raise TextVAEError(f"train.device {device!r}: under torchrun use 'cuda' (each process takes cuda:LOCAL_RANK)")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


@contextlib.contextmanager
def session(device: str) -> Iterator[torch.device]:
    """Join torchrun's process group for the block and leave it afterwards, on errors too (so other ranks stop
    waiting); yields this process's device. A no-op without torchrun or inside a group already joined."""
    local = local_device(device)
    if not launched() or initialized():
        yield local
        return
    cuda = local.type == "cuda"
    if cuda:
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if cuda else "gloo", device_id=local if cuda else None)
    try:
        yield local
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    if initialized():
        dist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (filling shared caches), then the other ranks."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def check_batch_size(batch_size: int, key: str = "data.batch_size") -> None:
    """Every rank trains on an equal share of each batch: the batch size must divide by the world size."""
    world = world_size()
    if batch_size % world:
        raise TextVAEError(f"{key} {batch_size} is not divisible by the {world} processes (each takes an equal share)")


def shard(batch: B) -> B:
    """This rank's equal share of a global batch (a dataclass of tensors, documents along the first dimension)."""
    world = world_size()
    if world == 1:
        return batch
    n = len(batch)  # type: ignore[arg-type]
    if n % world:
        raise ValueError(f"a batch of {n} cannot be split evenly over {world} processes")
    rows = slice(rank() * n // world, (rank() + 1) * n // world)
    return dataclasses.replace(batch, **{f.name: getattr(batch, f.name)[rows] for f in dataclasses.fields(batch)})


def sharded_noise() -> contextlib.AbstractContextManager:
    """Reparameterisation noise of this rank's rows of the global batch (see `textvae.noise`)."""
    return noise.sharded(rank(), world_size())


def _comm_device() -> torch.device:
    """Where small collective tensors live: the current CUDA device for NCCL, else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def _buckets(tensors: Iterable[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
    """Tensors grouped by dtype and device, in runs of at most BUCKET_ELEMENTS elements (or one larger tensor)."""
    groups: dict[tuple, list[torch.Tensor]] = {}
    for tensor in tensors:
        groups.setdefault((tensor.dtype, tensor.device), []).append(tensor)
    for group in groups.values():
        bucket: list[torch.Tensor] = []
        size = 0
        for tensor in group:
            if bucket and size + tensor.numel() > BUCKET_ELEMENTS:
                yield bucket
                bucket, size = [], 0
            bucket.append(tensor)
            size += tensor.numel()
        if bucket:
            yield bucket


@torch.no_grad()
def _coalesced(tensors: Iterable[torch.Tensor], collective: Callable[[torch.Tensor], Any]) -> None:
    """Run `collective` in place on the tensors flattened into one buffer per bucket, and copy the result back."""
    for bucket in _buckets(tensors):
        flat = torch.cat([t.reshape(-1) for t in bucket])
        collective(flat)
        for tensor, part in zip(bucket, flat.split([t.numel() for t in bucket])):
            tensor.copy_(part.view_as(tensor))


def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Replace each gradient by its mean over ranks. Parameters without a gradient are skipped: which ones have
    none is decided by the code path, the same on every rank."""
    world = world_size()
    if world == 1:
        return

    def mean(flat: torch.Tensor) -> None:
        dist.all_reduce(flat)
        flat.div_(world)

    _coalesced((p.grad for p in params if p.grad is not None), mean)


def broadcast_tensors(tensors: Iterable[torch.Tensor]) -> None:
    """Overwrite the tensors (parameters, buffers) with rank 0's."""
    if world_size() > 1:
        _coalesced(tensors, lambda flat: dist.broadcast(flat, src=0))


def reduce_sums(values: dict[str, float]) -> dict[str, float]:
    """Each value summed over ranks (one collective; every rank must pass the same keys)."""
    if world_size() == 1:
        return dict(values)
    keys = sorted(values)
    totals = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(totals)
    return dict(zip(keys, totals.tolist()))


def broadcast_json(value: Any) -> Any:
    """Rank 0's `value` (anything JSON can carry) on every rank: decisions taken from it agree everywhere."""
    if world_size() == 1:
        return value
    device = _comm_device()
    payload = json.dumps(value).encode("utf-8") if is_main() else b""
    size = torch.tensor([len(payload)], dtype=torch.long, device=device)
    dist.broadcast(size, src=0)
    data = torch.empty(int(size.item()), dtype=torch.uint8, device=device)
    if is_main():
        data.copy_(torch.frombuffer(bytearray(payload), dtype=torch.uint8))
    dist.broadcast(data, src=0)
    return json.loads(data.cpu().numpy().tobytes().decode("utf-8"))
