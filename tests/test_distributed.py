"""Data-parallel training: 2 CPU processes (gloo) match one process with the same global batch; the loader
prefetches the same batches in the same order; the helpers are no-ops in a single process."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from conftest import textvae
from safetensors.torch import load_file, save_file

from textvae import noise
from textvae.config import Recipe
from textvae.data.batching import LengthBucketSampler, Prefetcher, RandomBatches, TokenizedSplit, collate, make_loader
from textvae.data.tokenizers import WordTokenizer
from textvae.errors import TextVAEError
from textvae.models.model import build_model
from textvae.training import distributed
from textvae.training.guards import NonFiniteGuard
from textvae.training.trainer import Trainer

DOCS = [[4 + (i * 7 + j) % 20 for j in range(2 + i % 6)] for i in range(40)]
VOCAB = 30
RULES: dict[str, dict[str, Any]] = {
    "joint": {"type": "joint"},
    "aggressive": {"type": "aggressive", "max_inner_steps": 6, "check_every": 3},
    "savae": {"type": "savae", "svi": {"steps": 3, "lr": 0.5, "clip": 5.0, "hvp": "exact"}},
}
TIMING = {"tokens_per_s", "epoch_seconds", "train_tokens_per_s"}
RTOL = 1e-5  # the same arithmetic on halves of each batch: float32 rounding only
WORKER_TIMEOUT = 240.0


def recipe(update: dict[str, Any], batch_size: int = 8) -> Recipe:
    """A tiny LSTM VAE without dropout (masks are drawn per process: they cannot match one process's)."""
    return Recipe.model_validate(
        {
            "data": {"train": "unused", "valid": "unused", "batch_size": batch_size, "eval_batch_size": 8},
            "model": {"embed_dim": 8, "hidden_dim": 16, "latent_dim": 3, "dropout_in": 0.0, "dropout_out": 0.0},
            "update": update,
            "optim": {"lr": 0.5, "clip": 5.0},
            "train": {"epochs": 2, "log_every": 2, "val_latent_metrics": False, "seed": 3},
            "eval": {"mi_batch_size": 8},
        }
    )


def tiny_trainer(update: dict[str, Any], run_dir: Path, batch_size: int = 8) -> Trainer:
    cfg = recipe(update, batch_size)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, VOCAB)
    tokenizer = WordTokenizer.from_vocab([f"w{i}" for i in range(VOCAB - 4)])
    return Trainer(cfg, model, tokenizer, TokenizedSplit(DOCS), TokenizedSplit(DOCS[:16]), run_dir)


def train(update: dict[str, Any], run_dir: Path) -> dict[str, torch.Tensor]:
    """Train the tiny recipe on DOCS (5 steps of 8 documents per epoch, 2 epochs); the final weights."""
    if distributed.is_main():  # as `textvae.api.train`: rank 0 creates the run directory
        run_dir.mkdir(parents=True)
    trainer = tiny_trainer(update, run_dir)
    trainer.fit()
    return {k: v.detach().clone().contiguous() for k, v in trainer.model.state_dict().items()}


def collective_checks(rank: int) -> dict[str, Any]:
    """What the helpers give on this rank of two."""
    param = torch.nn.Parameter(torch.zeros(3))
    param.grad = torch.full((3,), float(rank))
    distributed.average_gradients([param])
    refusal = None
    try:
        tiny_trainer(RULES["joint"], Path("unused"), batch_size=7)
    except TextVAEError as err:
        refusal = str(err)
    local_loss = torch.tensor(float("nan") if rank == 1 else 1.0)  # only rank 1's loss is not finite
    return {
        "guard_steps": NonFiniteGuard().finite(torch.tensor(1.0), local_loss, []),
        "sums": distributed.reduce_sums({"a": rank + 1.0, "b": 10.0 * rank}),
        "json": distributed.broadcast_json({"rank": rank}),
        "shard": distributed.shard(collate([(i, DOCS[i]) for i in range(4)])).index.tolist(),
        "grad": param.grad.tolist(),
        "refusal": refusal,
    }


def worker(rank: int, port: int, out: Path) -> None:
    """Rank `rank` of two gloo processes: the helpers, then every rule trained data-parallel."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    os.environ["LOCAL_RANK"] = str(rank)
    torch.set_num_threads(1)
    with distributed.session("cpu"):
        (out / f"checks-rank{rank}.json").write_text(json.dumps(collective_checks(rank)))
        for name, update in RULES.items():  # each rank its own run directory: rank 1's must stay empty
            weights = train(update, out / name / f"rank{rank}")
            save_file(weights, str(out / f"{name}-weights-rank{rank}.safetensors"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_two(fn: Callable, *args: Any, timeout: float = WORKER_TIMEOUT) -> None:
    """fn(rank, *args) in two spawned processes; fails (and stops them) on an error or a hang."""
    context = mp.start_processes(fn, args=args, nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.terminate()
            pytest.fail(f"two-process training did not finish in {timeout:.0f} s")


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    started = time.perf_counter()
    run_two(worker, free_port(), out)
    print(f"2 processes, {len(RULES)} rules: {time.perf_counter() - started:.1f} s")
    return out


@pytest.fixture(scope="module")
def one_process_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("single")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, update in RULES.items():
            save_file(train(update, out / name), str(out / f"{name}-weights.safetensors"))
    finally:
        torch.set_num_threads(before)
    return out


def metrics(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def files(run_dir: Path) -> set[str]:
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()}


def assert_records_close(got: list[dict], want: list[dict]) -> None:
    assert [r["kind"] for r in got] == [r["kind"] for r in want]  # one line per log event, not one per process
    for mine, theirs in zip(got, want):
        assert mine.keys() == theirs.keys()
        for key in mine.keys() - TIMING:
            if isinstance(theirs[key], float):
                assert mine[key] == pytest.approx(theirs[key], rel=RTOL, abs=1e-6), key
            else:
                assert mine[key] == theirs[key], key


# -- two processes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", list(RULES))
def test_two_processes_match_one_with_the_same_global_batch(rule, two_process_runs, one_process_runs):
    want = load_file(str(one_process_runs / f"{rule}-weights.safetensors"))
    ranks = [load_file(str(two_process_runs / f"{rule}-weights-rank{r}.safetensors")) for r in (0, 1)]
    for name, tensor in want.items():
        assert torch.equal(ranks[0][name], ranks[1][name]), name  # the processes never drift apart
        torch.testing.assert_close(ranks[0][name], tensor, rtol=RTOL, atol=1e-6, msg=name)
    assert_records_close(metrics(two_process_runs / rule / "rank0"), metrics(one_process_runs / rule))
    if rule == "aggressive":  # inner loops ran (and, by the records above, stopped when one process's did)
        records = metrics(two_process_runs / rule / "rank0")
        assert all(3.0 <= r["inner_steps"] <= 6.0 for r in records if r["kind"] == "step" and r["epoch"] == 0)


def test_only_rank_zero_writes(two_process_runs, one_process_runs):
    for rule in RULES:
        assert files(two_process_runs / rule / "rank0") == files(one_process_runs / rule)
        assert not (two_process_runs / rule / "rank1").exists()


def test_collectives_and_the_batch_size_refusal(two_process_runs):
    checks = [json.loads((two_process_runs / f"checks-rank{r}.json").read_text()) for r in (0, 1)]
    for rank, got in enumerate(checks):
        assert got["sums"] == {"a": 3.0, "b": 10.0}
        assert got["json"] == {"rank": 0}  # rank 0's value everywhere
        assert got["shard"] == [2 * rank, 2 * rank + 1]
        assert got["grad"] == [0.5, 0.5, 0.5]
        assert got["guard_steps"] is False  # one process's non-finite loss: every process skips
        assert got["refusal"] == "data.batch_size 7 is not divisible by the 2 processes (each takes an equal share)"


def torchrun(*args: str | Path, timeout: float = WORKER_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """`torchrun --standalone --nproc_per_node 2 -m textvae ARGS` (a free port of its own choosing)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    env.pop("TEXTVAE_DEBUG", None)
    return subprocess.run(
        [*command, "-m", "textvae", *map(str, args)], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_torchrun_cli_trains_like_one_process(tmp_path: Path, write_corpus, write_yaml):
    for name, n in (("train", 96), ("valid", 16)):
        write_corpus(tmp_path / f"{name}.txt", n, seed=len(name))
    tiny = recipe({"type": "joint"}, batch_size=16).model_dump(mode="json", by_alias=True)
    tiny["data"] = {"train": str(tmp_path / "train.txt"), "valid": str(tmp_path / "valid.txt"), "batch_size": 16}
    tiny["data"]["cache_dir"] = str(tmp_path / "hf-cache")
    path = write_yaml(tmp_path / "tiny.yaml", {k: tiny[k] for k in ("data", "model", "optim", "train", "eval")})
    one = textvae("train", path, "-o", tmp_path / "one")
    assert one.returncode == 0, one.stderr
    two = torchrun("train", path, "-o", tmp_path / "two")
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("trained:") == 1  # rank 0 alone reports
    assert files(tmp_path / "two") == files(tmp_path / "one")
    assert_records_close(metrics(tmp_path / "two"), metrics(tmp_path / "one"))
    assert json.loads((tmp_path / "two" / "environment.json").read_text())["world_size"] == 2
    want = load_file(str(tmp_path / "one" / "model" / "model.safetensors"))
    for name, tensor in load_file(str(tmp_path / "two" / "model" / "model.safetensors")).items():
        torch.testing.assert_close(tensor, want[name], rtol=RTOL, atol=1e-6, msg=name)

    # resumed under torchrun from its second-newest checkpoint, the run ends as it did
    shutil.copytree(tmp_path / "two", tmp_path / "resumed")
    (tmp_path / "resumed" / "trainer_state.json").unlink()
    shutil.rmtree(max((tmp_path / "resumed" / "checkpoints").iterdir()))
    resumed = torchrun("train", "--resume", tmp_path / "resumed")
    assert resumed.returncode == 0, resumed.stderr
    timing = {"epoch_seconds", "tokens_per_s", "train_tokens_per_s"}
    untimed = [
        [{k: v for k, v in r.items() if k not in timing} for r in metrics(tmp_path / run)] for run in ("resumed", "two")
    ]
    assert untimed[0] == untimed[1]
    got, want = (load_file(str(tmp_path / run / "model" / "model.safetensors")) for run in ("resumed", "two"))
    assert all(torch.equal(got[name], tensor) for name, tensor in want.items())

    odd = torchrun("train", path, "-o", tmp_path / "odd", "--set", "data.batch_size=15")
    assert odd.returncode != 0
    assert "error: data.batch_size 15 is not divisible by the 2 processes" in odd.stderr
    assert not (tmp_path / "odd").exists()


# -- one process: no process group, nothing changes -------------------------------------------------


def test_single_process_helpers_are_no_ops():
    assert (distributed.world_size(), distributed.rank(), distributed.is_main()) == (1, 0, True)
    batch = collate([(i, DOCS[i]) for i in range(3)])
    assert distributed.shard(batch) is batch
    assert distributed.reduce_sums({"a": 1.5}) == {"a": 1.5}
    assert distributed.broadcast_json({"x": [1]}) == {"x": [1]}
    param = torch.nn.Parameter(torch.zeros(2))
    param.grad = torch.ones(2)
    distributed.average_gradients([param])
    assert param.grad.tolist() == [1.0, 1.0]
    with distributed.session("cpu") as device:
        assert device == torch.device("cpu") and not distributed.initialized()


def test_sharded_noise_is_the_rank_s_rows_of_the_global_draw():
    torch.manual_seed(0)
    whole = torch.randn(6, 2, 3)
    for rank in (0, 1):
        torch.manual_seed(0)
        with noise.sharded(rank, 2):
            assert torch.equal(noise.randn_rows(3, 2, 3), whole[3 * rank : 3 * rank + 3])
    torch.manual_seed(0)
    assert torch.equal(noise.randn_rows(6, 2, 3), whole)  # outside: plain torch.randn


def test_cuda_under_torchrun_is_the_local_rank_s_device(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.local_device("cuda") == torch.device("cuda", 1)
    assert distributed.local_device("cpu") == torch.device("cpu")
    with pytest.raises(TextVAEError, match="use 'cuda'"):
        distributed.local_device("cuda:0")


def test_batches_are_cut_to_a_multiple_of_the_processes():
    lengths = [3] * 21  # batches of 8, 8 and 5: the last cut to 4 for two processes, dropped for six
    for k, sizes in ((1, [8, 8, 5]), (2, [8, 8, 4]), (8, [8, 8])):
        sampler = LengthBucketSampler(lengths, 8, shuffle=True, seed=1, multiple_of=k)
        assert sorted(map(len, sampler.batches()), reverse=True) == sizes and len(sampler) == len(sizes)
    assert RandomBatches(TokenizedSplit(DOCS[:7]), 8, seed=0, multiple_of=2)().tokens.shape[0] == 6


# -- the prefetching loader ---------------------------------------------------------------------------


def test_prefetcher_yields_the_loader_s_batches_in_order():
    loader = make_loader(TokenizedSplit(DOCS), 6, shuffle=True, seed=5)
    expected = [(b.tokens, b.lengths, b.index) for b in loader]
    got = [(b.tokens, b.lengths, b.index) for b in Prefetcher(loader, depth=2)]
    assert len(got) == len(expected) == len(Prefetcher(loader))
    for mine, theirs in zip(got, expected):
        assert all(torch.equal(a, b) for a, b in zip(mine, theirs))


def test_producer_errors_surface_in_the_consumer():
    def batches():
        yield 1
        yield 2
        raise RuntimeError("bad document 3")

    seen = []
    with pytest.raises(RuntimeError, match="bad document 3"):
        for item in Prefetcher(batches(), prepare=lambda x: 10 * x):
            seen.append(item)
    assert seen == [10, 20]


def test_leaving_the_loop_early_stops_the_thread():
    before = threading.active_count()
    for item in Prefetcher(range(1000), depth=1):
        if item == 3:
            break
    assert threading.active_count() == before
