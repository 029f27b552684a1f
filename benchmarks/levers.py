"""What each speed lever buys: the joint training step and IW-NLL of He et al.'s Yahoo model, one lever at a time.

    OMP_NUM_THREADS=2 python benchmarks/levers.py [--data ../shared/data/yahoo] [--steps 6] [--iw-sentences 2]

Prints one JSON object: per configuration (denormals, fused loss, bf16 autocast, compiled softmax, added one
after another), the median seconds of a joint step over `--steps` batches of 60-100-word Yahoo documents
(after 2 warm-up steps), its target tokens/s, and IW-NLL sentences/s (k = 500). All in one process on
the same batches, so the figures compare directly.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from yahoo_docs import load_ranges, parse_ranges  # noqa: E402

from textvae.config import ElboConfig, EvalConfig, ModelConfig, OptimConfig  # noqa: E402
from textvae.data.batching import TokenizedSplit, make_loader  # noqa: E402
from textvae.evaluation.likelihood import iw_nll  # noqa: E402
from textvae.models.model import build_model  # noqa: E402
from textvae.objectives import build_objective  # noqa: E402
from textvae.training.updates import JointUpdate, UpdateContext  # noqa: E402

LEVERS = [  # (name, flush denormals, fused loss, precision, compiled)
    ("fp32, nothing", False, False, "fp32", False),
    ("+ denormals flushed", True, False, "fp32", False),
    ("+ fused output layer / loss", True, True, "fp32", False),
    ("+ bf16 autocast", True, True, "bf16", False),
    ("+ compiled softmax", True, True, "bf16", True),
]


def configure(model, fused: bool, precision: str, compiled: bool) -> None:
    model.set_precision(precision).set_compiled(compiled)
    model.decoder.fused_loss = fused  # after: the model picks the fused loss for bf16 or compiled runs


def step_seconds(model, batches, steps: int) -> float:
    """Median seconds of a joint step (SGD lr 1, clip 5, as He et al.) after 2 warm-up steps."""
    rule = JointUpdate(
        UpdateContext(model, build_objective(ElboConfig(), 100, 1), OptimConfig(), None, 1.0, lambda: None)
    )
    model.train()
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        rule(batches[i % len(batches)], i)
        times.append(time.perf_counter() - start)
    return statistics.median(times[2:])


def iw_rate(model, ids: list[list[int]]) -> float:
    loader = make_loader(TokenizedSplit(ids), 32, shuffle=False)
    iw_nll(model, make_loader(TokenizedSplit(ids[:1]), 32, shuffle=False), k=20)  # warm-up (compilation)
    start = time.perf_counter()
    iw_nll(model, loader, k=EvalConfig().iw_samples)
    return len(ids) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/yahoo"))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--iw-sentences", type=int, default=2)
    args = parser.parse_args()
    vocab, (data,) = load_ranges(Path(args.data), parse_ranges("60-100"), 32)
    torch.manual_seed(0)
    model = build_model(ModelConfig(embed_dim=512, hidden_dim=1024, latent_dim=32), vocab)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    batches = data.batches[:: max(1, len(data.batches) // args.steps)][: args.steps]
    tokens = statistics.median(b.n_predicted for b in batches)
    out = {"device": "cpu", "threads": torch.get_num_threads(), "torch": torch.__version__, "levers": {}}
    for name, flush, fused, precision, compiled in LEVERS:
        model.load_state_dict(initial)
        configure(model, fused, precision, compiled)
        torch.set_flush_denormal(flush)
        seconds = step_seconds(model, batches, args.steps)
        rate = iw_rate(model.eval(), data.ids[: args.iw_sentences])
        out["levers"][name] = {
            "step_seconds": round(seconds, 3),
            "train_tokens_per_s": round(tokens / seconds, 1),
            "iw_nll_sentences_per_s": round(rate, 4),
        }
        print(name, out["levers"][name], file=sys.stderr, flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
