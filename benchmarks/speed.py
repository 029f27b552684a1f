"""Training and evaluation speed of a recipe's model on real Yahoo documents, optionally against a research-style
baseline (`benchmarks/baseline.py`) measured in the same run.

    python benchmarks/speed.py [RECIPE] [--data ../shared/data/yahoo] [--baseline] [--device cpu|cuda]
        [--precision fp32|bf16] [--train-steps N] [--inner-steps N] [--savae-steps N] [--iw-sentences N]
        [--mi-sentences 1000] [--lengths 60-100,101-] [--savae-lengths all] [--set key=value]

Prints one JSON object on stdout (progress goes to stderr): per length range, tokens/s of the joint update, of
aggressive encoder-only inner steps and of SA-VAE steps, IW-NLL sentences/s, seconds for MI + AU, peak memory.
Each implementation runs in its own child process (so peak RSS is its own). See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch
from baseline import BaselineTrainer, BaselineVAE, calc_au, calc_mi, iw_nll
from yahoo_docs import RangeData, batch_order, length_batches, load_ranges, parse_ranges

from textvae.config import AggressiveUpdateConfig, Recipe, SVIConfig, load_recipe
from textvae.data.batching import TextBatch
from textvae.errors import TextVAEError

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RECIPE = REPO / "recipes" / "yahoo" / "vanilla.yaml"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "yahoo"
BASELINE_IW_CHUNK = 100  # He et al.'s calc_iwnll: 500 samples in chunks of 100


def log(message: str) -> None:
    """A progress line on stderr, with the time and the peak RSS so far."""
    print(f"[{time.strftime('%H:%M:%S')} {peak_rss_mb():.0f} MB] {message}", file=sys.stderr, flush=True)


class Bench(Protocol):
    """What the timing harness needs from an implementation."""

    impl: str
    dtype: str
    iw_chunk: int
    denormals_flushed: bool

    def context(self) -> contextlib.AbstractContextManager: ...

    def reset(self, seed: int) -> None: ...

    def train_step(self, batch: TextBatch) -> None: ...

    def inner_steps(self, batches: list[TextBatch]) -> None: ...

    def savae_step(self, batch: TextBatch) -> None: ...

    def iw(self, ids: list[list[int]], k: int) -> None: ...

    def mi_au(self, ids: list[list[int]]) -> None: ...


class BaselineBench:
    """benchmarks/baseline.py behind the harness: fp32, no denormal flushing, He et al.'s batch sizes."""

    impl = "baseline"
    dtype = "fp32"
    iw_chunk = BASELINE_IW_CHUNK

    def __init__(self, recipe: Recipe, vocab_size: int, device: torch.device, svi: SVIConfig) -> None:
        self.recipe = recipe
        self.vocab_size = vocab_size
        self.device = device
        self.svi = svi

    def context(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    @property
    def denormals_flushed(self) -> bool:
        return (torch.tensor([1e-30]) * torch.tensor([1e-10])).item() == 0.0

    def reset(self, seed: int) -> None:
        torch.manual_seed(seed)
        m = self.recipe.model
        self.model = BaselineVAE(
            self.vocab_size,
            m.embed_dim,
            m.hidden_dim,
            m.latent_dim,
            m.dropout_in,
            m.dropout_out,
            m.init_scale,
            m.embed_init_scale,
        ).to(self.device)
        self.trainer = BaselineTrainer(self.model, self.recipe.optim.lr, self.recipe.optim.clip)

    def train_step(self, batch: TextBatch) -> None:
        self.model.train()
        self.trainer.joint_step(batch)

    def inner_steps(self, batches: list[TextBatch]) -> None:
        self.model.train()
        for batch in batches:
            self.trainer.inner_step(batch)

    def savae_step(self, batch: TextBatch) -> None:
        self.model.train()
        with torch.backends.cudnn.flags(enabled=self.svi.hvp != "exact"):  # cuDNN's LSTM has no double backward
            self.trainer.savae_step(batch, self.svi)

    def iw(self, ids: list[list[int]], k: int) -> None:
        iw_nll(self.model, [b.to(self.device) for b in length_batches(ids, 1)], k, self.iw_chunk)

    def mi_au(self, ids: list[list[int]]) -> None:
        batches = [b.to(self.device) for b in length_batches(ids, self.recipe.data.batch_size)]
        calc_mi(self.model, batches)
        calc_au(self.model, batches, self.recipe.eval.au_threshold)


# -- the timing harness ----------------------------------------------------------------------------------------------


def clock(device: torch.device, work: Callable[[], object]) -> float:
    """Wall-clock seconds of `work()`, the device synchronised before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def tokens(batches: list[TextBatch]) -> int:
    return sum(batch.n_predicted for batch in batches)


def time_steps(device: torch.device, step: Callable, warm: list, timed: list) -> tuple[float, int]:
    """Seconds of one `step` per timed batch (after the warm-up batches) and the tokens they predict."""
    for batch in warm:
        step(batch)
    seconds = clock(device, lambda: [step(batch) for batch in timed])
    return seconds, tokens(timed)


def measure_range(bench: Bench, data: RangeData, args: argparse.Namespace, device: torch.device) -> dict:
    """Every figure of one length range, on a freshly initialised model."""
    name = data.length.name
    warm = args.warmup
    steps = max(args.train_steps, args.inner_steps, args.savae_steps)
    batches = [data.batches[i].to(device) for i in batch_order(len(data.batches), warm + steps, args.seed)]
    bench.reset(args.seed)
    out: dict = {}

    log(f"{bench.impl} {name}: {args.train_steps} joint steps (+{warm} warm-up)")
    seconds, n = time_steps(device, bench.train_step, batches[:warm], batches[warm : warm + args.train_steps])
    out.update(train_steps=args.train_steps, full_step_seconds=seconds / args.train_steps)
    out["train_tokens_per_s"] = n / seconds

    log(f"{bench.impl} {name}: {args.inner_steps} aggressive inner steps (+{warm} warm-up)")
    if warm:
        bench.inner_steps(batches[:warm])
    timed = batches[warm : warm + args.inner_steps]
    seconds = clock(device, lambda: bench.inner_steps(timed))
    out.update(
        inner_steps=args.inner_steps,
        inner_step_seconds=seconds / args.inner_steps,
        aggressive_inner_tokens_per_s=tokens(timed) / seconds,
    )

    out.update(savae_steps=0, savae_step_seconds=None, savae_tokens_per_s=None)
    if name in args.savae_lengths:  # SA-VAE steps cost ~30 joint steps each: by default on the first range only
        log(f"{bench.impl} {name}: {args.savae_steps} SA-VAE steps")
        timed = batches[warm : warm + args.savae_steps]
        seconds, n = time_steps(device, bench.savae_step, [], timed)
        out.update(savae_steps=args.savae_steps, savae_step_seconds=seconds / args.savae_steps)
        out["savae_tokens_per_s"] = n / seconds

    iw_ids = data.ids[: args.iw_sentences]
    log(f"{bench.impl} {name}: IW-NLL of {len(iw_ids)} sentences, k = {args.iw_samples}")
    if warm:
        bench.iw(data.ids[:1], min(args.iw_samples, BASELINE_IW_CHUNK))
    seconds = clock(device, lambda: bench.iw(iw_ids, args.iw_samples))
    out.update(iw_sentences=len(iw_ids), iw_seconds=seconds, iw_nll_sentences_per_s=len(iw_ids) / seconds)

    mi_ids = data.ids[: args.mi_sentences]
    log(f"{bench.impl} {name}: MI + AU of {len(mi_ids)} sentences")
    out.update(mi_au_sentences=len(mi_ids), mi_au_seconds=clock(device, lambda: bench.mi_au(mi_ids)))
    out = {key: float(f"{value:.4g}") if isinstance(value, float) else value for key, value in out.items()}
    log(f"{bench.impl} {name}: {json.dumps(out)}")
    return out


# -- one implementation (a child process) ----------------------------------------------------------------------------


def sibling_update(recipe_path: Path, recipe: Recipe, kind: str, filename: str, overrides: list[str]):
    """The `update:` section of type `kind`: the recipe's own, else that of recipes/<dataset>/<filename>, else None."""
    if recipe.update.type == kind:
        return recipe.update
    sibling = recipe_path.parent / filename
    if sibling.is_file():
        update = load_recipe(sibling, overrides).update
        if update.type == kind:
            return update
    return None


def update_settings(args: argparse.Namespace, recipe: Recipe) -> tuple[AggressiveUpdateConfig, SVIConfig]:
    """Aggressive and SA-VAE settings from the recipe's siblings (aggressive.yaml, savae.yaml), with CLI overrides."""
    path = Path(args.recipe)
    aggressive = sibling_update(path, recipe, "aggressive", "aggressive.yaml", args.overrides)
    aggressive = aggressive or AggressiveUpdateConfig(type="aggressive")
    savae = sibling_update(path, recipe, "savae", "savae.yaml", args.overrides)
    svi = savae.svi if savae is not None else SVIConfig()
    if args.inner_clip:
        aggressive = aggressive.model_copy(update={"inner_clip": args.inner_clip})
    if args.svi_hvp:
        svi = svi.model_copy(update={"hvp": args.svi_hvp})
    return aggressive, svi


def peak_rss_mb() -> float:
    """This process's peak resident set size (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if platform.system() == "Darwin" else 2**10), 1)


def run_impl(args: argparse.Namespace) -> dict:
    """Measure one implementation over every length range; the child process's whole job."""
    started = time.perf_counter()
    recipe = load_recipe(args.recipe, args.overrides)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    precision = args.precision or recipe.train.precision
    args.iw_samples = args.iw_samples or recipe.eval.iw_samples
    aggressive, svi = update_settings(args, recipe)
    vocab_size, ranges = load_ranges(Path(args.data), parse_ranges(args.lengths), recipe.data.batch_size)
    log(f"{args.impl}: vocabulary {vocab_size}, " + ", ".join(f"{r.length.name}: {len(r.ids)} docs" for r in ranges))
    if args.impl == "ours":
        from speed_ours import OursBench  # the package's model stack is loaded by this process only

        bench: Bench = OursBench(recipe, vocab_size, device, precision, aggressive, svi, len(ranges[0].batches))
    else:
        bench = BaselineBench(recipe, vocab_size, device, svi)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with bench.context():
        flushed = bench.denormals_flushed
        lengths = {r.length.name: measure_range(bench, r, args, device) for r in ranges}
    return {
        "impl": args.impl,
        "recipe": args.recipe,
        "device": str(device),
        "dtype": bench.dtype,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "denormals_flushed": flushed,
        "iw_samples": args.iw_samples,
        "iw_chunk": bench.iw_chunk,
        "svi": {"steps": svi.steps, "hvp": svi.hvp},
        "inner_clip": aggressive.inner_clip if args.impl == "ours" else "model",
        "peak_rss_mb": peak_rss_mb(),
        "peak_cuda_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "data": {r.length.name: r.stats() for r in ranges},
        "lengths": lengths,
    }


# -- the parent: run each implementation in a child, merge -----------------------------------------------------------

SHARED = ("impl", "recipe", "device", "torch", "threads", "data")  # the report's top level, from the first child


def child(impl: str, argv: list[str]) -> dict:
    """Run this script with `--impl impl` and the same arguments; its stdout is one JSON object."""
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *argv, "--impl", impl], stdout=subprocess.PIPE, text=True
    )
    if done.returncode:
        raise SystemExit(f"speed.py: the {impl} measurement failed (exit status {done.returncode})")
    return json.loads(done.stdout)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator rounded, None where either is missing (e.g. SA-VAE not measured)."""
    if not numerator or not denominator or not math.isfinite(numerator / denominator):
        return None
    return round(numerator / denominator, 3)


def ratios(ours: dict, baseline: dict | None) -> dict:
    """Per range: inner steps' tokens/s over the joint step's (ours, and the baseline's), and ours over baseline."""
    out = {}
    for name, mine in ours["lengths"].items():
        inner_vs_full = ratio(mine["aggressive_inner_tokens_per_s"], mine["train_tokens_per_s"])
        row = {"aggressive_inner_vs_full_step": inner_vs_full}
        if baseline is not None:
            base = baseline["lengths"][name]
            row.update(
                train=ratio(mine["train_tokens_per_s"], base["train_tokens_per_s"]),
                aggressive_inner=ratio(mine["aggressive_inner_tokens_per_s"], base["aggressive_inner_tokens_per_s"]),
                savae=ratio(mine["savae_tokens_per_s"], base["savae_tokens_per_s"]),
                iw=ratio(mine["iw_nll_sentences_per_s"], base["iw_nll_sentences_per_s"]),
                mi_au=ratio(base["mi_au_seconds"], mine["mi_au_seconds"]),
                baseline_aggressive_inner_vs_full_step=ratio(
                    base["aggressive_inner_tokens_per_s"], base["train_tokens_per_s"]
                ),
            )
        out[name] = row
    return out


def merge(results: dict[str, dict], started: float) -> dict:
    first = next(iter(results.values()))
    report = {key: first[key] for key in SHARED if key != "impl"}
    report["lengths"] = report.pop("data")
    for impl, result in results.items():
        report[impl] = {key: value for key, value in result.items() if key not in SHARED or key == "device"}
    report["ratios"] = ratios(results["ours"], results.get("baseline"))
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    return report


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", nargs="?", default=str(DEFAULT_RECIPE), help="the model (default: He et al. Yahoo)")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="vocab.txt.gz, yahoo.valid/test.txt.gz")
    parser.add_argument("--baseline", action="store_true", help="also measure benchmarks/baseline.py")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    parser.add_argument("--precision", choices=["fp32", "bf16"], help="textvae's; default: the recipe's")
    parser.add_argument("--train-steps", type=int, default=8, help="timed joint steps per range")
    parser.add_argument("--inner-steps", type=int, default=8, help="timed aggressive inner steps per range")
    parser.add_argument("--savae-steps", type=int, default=1, help="timed SA-VAE steps per range")
    parser.add_argument("--savae-lengths", help="ranges with SA-VAE steps, or 'all' (default: the first range)")
    parser.add_argument("--iw-sentences", type=int, default=4, help="sentences scored by IW-NLL per range")
    parser.add_argument("--iw-samples", type=int, help="IW-NLL samples (default: the recipe's eval.iw_samples)")
    parser.add_argument("--mi-sentences", type=int, default=1000, help="sentences for MI + AU per range")
    parser.add_argument("--lengths", default="60-100,101-", help="word-count ranges, e.g. 60-100,101-")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before each timing")
    parser.add_argument("--svi-hvp", choices=["exact", "finite_difference"], help="default: savae.yaml's")
    parser.add_argument("--inner-clip", choices=["model", "encoder"], help="textvae's; default: aggressive.yaml's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override key=value")
    parser.add_argument("--impl", choices=["ours", "baseline"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("train_steps", "inner_steps", "savae_steps", "iw_sentences", "mi_sentences"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    try:
        names = [length.name for length in parse_ranges(args.lengths)]
    except TextVAEError as err:
        parser.error(str(err))
    chosen = args.savae_lengths or names[0]
    args.savae_lengths = names if chosen == "all" else [part.strip() for part in chosen.split(",") if part.strip()]
    unknown = set(args.savae_lengths) - set(names)
    if unknown:
        parser.error(f"--savae-lengths {', '.join(sorted(unknown))}: not in --lengths ({args.lengths})")
    return args


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.impl:
        print(json.dumps(run_impl(args)))
        return
    started = time.perf_counter()
    impls = ("ours", "baseline") if args.baseline else ("ours",)
    results = {impl: child(impl, [a for a in argv if a != "--baseline"]) for impl in impls}
    print(json.dumps(merge(results, started), indent=2))


if __name__ == "__main__":
    main()
