"""Run a suite to the end, resumably: every (method, seed) is an ordinary run directory trained and evaluated by
`textvae train` / `textvae train --resume` / `textvae eval` subprocesses, N at a time.

The state of the suite is the state of its run directories, so nothing is repeated after a kill:

- `DIR/runs/METHOD/seed-S/trainer_state.json` exists: training finished;
- `.../checkpoints/` (or `.../pretrain/checkpoints/`) holds a checkpoint: training is resumed from the newest one;
- anything else: training starts (again) from scratch;
- `.../suite_eval.json` with the suite's evaluation settings: evaluated.

A run directory trained from another recipe is refused, never overwritten. Subprocesses die with the driver
(Linux's parent-death signal), and a lock on `DIR/.reproduce.lock` keeps a second driver off the same folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from textvae.api import run_recipe
from textvae.config import Recipe
from textvae.errors import TextVAEError
from textvae.suites.suite import Budget, Method, Suite, SuiteEval
from textvae.training.checkpoint import PRETRAIN_DIR, has_progress
from textvae.training.trainer import FINAL_STATE

logger = logging.getLogger(__name__)

EVAL_FILE = "suite_eval.json"
LOCK_FILE = ".reproduce.lock"


@dataclass
class Job:
    """One (method, seed) run of a suite and where it stands."""

    method: Method
    seed: int
    run_dir: Path
    log: Path
    epochs: int = 0  # of its recipe, pretraining included (progress: epochs logged / epochs)
    steps: list[str] = field(default_factory=list)  # what is left: "train", "resume", "eval"
    started: float | None = None
    failed: str | None = None

    @property
    def key(self) -> str:
        return f"{self.method.name}/seed-{self.seed}"


@dataclass
class Options:
    """What `textvae reproduce` was asked for."""

    out: Path
    seeds: list[int] | None = None
    only: list[str] | None = None
    budget: Budget = "full"
    device: str | None = None
    jobs: int = 1
    status_every: float = 60.0


def run_dir_of(out: Path, method: str, seed: int) -> Path:
    return out / "runs" / method / f"seed-{seed}"


def selected_methods(suite: Suite, only: list[str] | None) -> list[Method]:
    if not only:
        return list(suite.methods)
    return [suite.method(name) for name in only]


def plan(suite: Suite, opts: Options) -> list[Job]:
    """Every job of the suite with the steps it still needs (checked against what is on disk)."""
    jobs = []
    for method in selected_methods(suite, opts.only):
        for seed in suite.seeds_of(method, opts.seeds):
            run_dir = run_dir_of(opts.out, method.name, seed)
            recipe = suite.recipe(method, seed, opts.budget)
            log = opts.out / "logs" / f"{method.name}-seed-{seed}.log"
            job = Job(method, seed, run_dir, log, training_epochs(recipe))
            check_same_recipe(recipe, job)
            job.steps = steps_left(suite, job, opts.budget)
            jobs.append(job)
    return jobs


def check_same_recipe(recipe: Recipe, job: Job) -> None:
    """Refuse a run directory that holds a run of another recipe than `recipe` (never train over it)."""
    saved = job.run_dir / "recipe.yaml"
    if not saved.is_file():
        return
    expected = _comparable(recipe.model_dump(mode="json", by_alias=True))
    try:  # read back through today's schema: keys added since the run was saved take their defaults on both sides
        found = _comparable(run_recipe(job.run_dir).model_dump(mode="json", by_alias=True))
    except TextVAEError as err:
        raise TextVAEError(f"{saved}: not a readable recipe ({err})") from err
    if found != expected:
        key = _first_difference(expected, found)
        raise TextVAEError(
            f"{job.run_dir}: trained with another recipe than the suite's {job.method.name} row (first difference: "
            f"{key}); was it made with another --budget or suite version? use another -o or remove that run"
        )


def _comparable(recipe: dict) -> dict:
    """A recipe without what does not change a run's result: the device (a resumption may use another) and the
    checkpoint cadence (resuming from any checkpoint continues bitwise)."""
    recipe = json.loads(json.dumps(recipe))
    for key in ("device", "checkpoints"):
        recipe.get("train", {}).pop(key, None)
    return recipe


def _first_difference(a, b, prefix: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
    return prefix.rstrip(".") or "(top level)"


def steps_left(suite: Suite, job: Job, budget: Budget) -> list[str]:
    if (job.run_dir / FINAL_STATE).is_file():
        steps = []
    elif has_progress(job.run_dir):
        steps = ["resume"]
    else:
        steps = ["train"]
    if steps or not evaluated(suite.evaluation(budget), job.run_dir):
        steps.append("eval")
    return steps


def evaluated(want: SuiteEval, run_dir: Path) -> bool:
    """Whether the run has an evaluation with these settings."""
    metrics = read_json(run_dir / EVAL_FILE)
    if metrics is None:
        return False
    return (
        metrics.get("split") == want.split
        and metrics.get("iw_samples") == want.iw_samples
        and metrics.get("limit") == want.limit
        and (want.precision is None or metrics.get("precision") == want.precision)
    )


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def command(suite: Suite, job: Job, step: str, opts: Options) -> list[str]:
    """The `textvae` command line of one step of a job."""
    base = [sys.executable, "-m", "textvae"]
    device = ["--device", opts.device] if opts.device else []
    if step == "train":
        sets = [
            arg for item in suite.overrides(job.method, job.seed, opts.budget, opts.device) for arg in ("--set", item)
        ]
        overwrite = ["--overwrite"] if job.run_dir.exists() else []  # a start killed before its first checkpoint
        return [*base, "train", str(suite.recipe_path(job.method)), "-o", str(job.run_dir), *sets, *overwrite]
    if step == "resume":
        return [*base, "train", "--resume", str(job.run_dir), *device]
    want = suite.evaluation(opts.budget)
    args = ["--split", want.split, "--iw-samples", str(want.iw_samples), "--output", str(job.run_dir / EVAL_FILE)]
    args += ["--limit", str(want.limit)] if want.limit else []
    args += ["--precision", want.precision] if want.precision else []
    return [*base, "eval", str(job.run_dir), *args, *device]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGKILL when the driver dies, so no orphan trains on after a kill."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def child_env(jobs: int) -> dict[str, str]:
    """The subprocesses' environment: one share of the cores each unless OMP_NUM_THREADS says otherwise."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextlib.contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold DIR/.reproduce.lock for the whole drive; a second driver on the same folder is refused."""
    out.mkdir(parents=True, exist_ok=True)
    handle = open(out / LOCK_FILE, "a+")  # noqa: SIM115 - held for the context's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as err:
        handle.close()
        raise TextVAEError(f"{out}: another `textvae reproduce` is running on this folder") from err
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


class Driver:
    """Runs the jobs' steps as subprocesses, `opts.jobs` at a time, reporting progress through `on_status`."""

    def __init__(
        self,
        suite: Suite,
        opts: Options,
        on_status: Callable[[str], None],
        on_job_done: Callable[[Job], None] | None = None,
    ) -> None:
        self.suite, self.opts, self.say = suite, opts, on_status
        self.on_job_done = on_job_done or (lambda job: None)
        self.env = child_env(opts.jobs)
        self.started = time.monotonic()
        self.durations: dict[str, list[float]] = {}  # method -> wall seconds of jobs run start to end here

    def run(self, jobs: list[Job]) -> list[Job]:
        """Run every job's steps; returns the jobs that failed (their logs say why)."""
        # longest first (by the suite's estimates): the last runs to finish are short ones, so --jobs N stays busy
        queue = sorted((job for job in jobs if job.steps), key=lambda job: -self.estimate(job))
        running: dict[subprocess.Popen, Job] = {}
        done_before = len(jobs) - len(queue)
        self.say(f"suite {self.suite.name}: {len(jobs)} runs, {done_before} already done, {len(queue)} to do")
        last_status = time.monotonic()
        try:
            while queue or running:
                while queue and len(running) < self.opts.jobs:
                    job = queue.pop(0)
                    job.started = time.monotonic()
                    running[self._start(job)] = job
                finished = [proc for proc in running if proc.poll() is not None]
                for proc in finished:
                    job = running.pop(proc)
                    self._step_ended(job, proc.returncode)
                    if job.steps and not job.failed:
                        running[self._start(job)] = job
                    else:
                        self._job_ended(job)
                if finished or time.monotonic() - last_status >= self.opts.status_every:
                    self.say(self.status(jobs, queue, list(running.values())))
                    last_status = time.monotonic()
                if not finished:
                    time.sleep(0.2)
        finally:
            for proc in running:  # interrupted: the children go too (their checkpoints are atomic)
                with contextlib.suppress(OSError):
                    proc.kill()
                    proc.wait()
        return [job for job in jobs if job.failed]

    def _start(self, job: Job) -> subprocess.Popen:
        step = job.steps[0]
        argv = command(self.suite, job, step, self.opts)
        job.log.parent.mkdir(parents=True, exist_ok=True)
        with open(job.log, "ab") as log:
            log.write(f"\n$ {' '.join(argv[1:])}\n".encode())
            log.flush()
            self.say(f"start {job.key}: {step}")
            return subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads hold locks here
            )

    def _step_ended(self, job: Job, returncode: int) -> None:
        step = job.steps.pop(0)
        if returncode != 0:
            job.failed = f"{step} exited with {returncode}: {last_error(job.log)} (log: {job.log})"
            job.steps.clear()

    def _job_ended(self, job: Job) -> None:
        if job.failed:
            self.say(f"FAILED {job.key}: {job.failed}")
            return
        self.durations.setdefault(job.method.name, []).append(time.monotonic() - (job.started or time.monotonic()))
        self.say(f"done {job.key}")
        self.on_job_done(job)

    def status(self, jobs: list[Job], queue: list[Job], running: list[Job]) -> str:
        """`runs done / running / left` and the ETA from measured (else the suite's estimated) run times."""
        done = sum(1 for job in jobs if not job.steps and not job.failed)
        failed = sum(1 for job in jobs if job.failed)
        left = sum(self.estimate(job) for job in queue)
        left += sum(max(0.0, self.estimate(job) * (1 - fraction_trained(job))) for job in running)
        eta = left / max(1, self.opts.jobs)
        now = ", ".join(f"{job.key} ({job.steps[0]} {fraction_trained(job):.0%})" for job in running)
        parts = [f"{done}/{len(jobs)} done", f"{len(running)} running", f"{len(queue)} left"]
        if failed:
            parts.append(f"{failed} failed")
        return (
            f"[{_hours(time.monotonic() - self.started)}] "
            + ", ".join(parts)
            + (f", ETA {_hours(eta)}" if queue or running else "")
            + (f" | {now}" if now else "")
        )

    def estimate(self, job: Job) -> float:
        """Seconds a whole run of this job's method takes: measured here, else the suite's `minutes`."""
        measured = self.durations.get(job.method.name)
        if measured:
            return sum(measured) / len(measured)
        if job.method.minutes and self.opts.budget == "full":
            return job.method.minutes * 60
        every = [s for values in self.durations.values() for s in values]
        return sum(every) / len(every) if every else 60.0


def training_epochs(recipe: Recipe) -> int:
    """The epochs a recipe trains for at most, its pretraining phase's included."""
    pre = recipe.train.pretrain
    return recipe.train.epochs + (0 if pre is None else pre.epochs or recipe.train.epochs)


def fraction_trained(job: Job) -> float:
    """Epochs finished / epochs of the recipe, from the metrics.jsonl of the run and of its pretraining
    phase (1 once training has finished)."""
    if "train" not in job.steps and "resume" not in job.steps:
        return 1.0
    done = sum(logged_epochs(job.run_dir / sub / "metrics.jsonl") for sub in (".", PRETRAIN_DIR))
    return min(1.0, done / max(1, job.epochs))


def logged_epochs(metrics: Path) -> int:
    """The epoch lines of a metrics.jsonl (0 when there is none)."""
    try:
        lines = metrics.read_text(encoding="utf-8").splitlines()
    except OSError:
        return 0
    return sum(1 for line in lines if '"kind": "epoch"' in line)


def last_error(log: Path) -> str:
    """The last `error:` line of a log (else its last non-empty line)."""
    try:
        lines = [line.strip() for line in log.read_text(encoding="utf-8", errors="replace").splitlines()]
    except OSError:
        return "no log"
    errors = [line for line in lines if line.startswith("error:")]
    rest = [line for line in lines if line]
    return (errors or rest or ["no output"])[-1][:300]


def _hours(seconds: float) -> str:
    minutes = int(round(seconds / 60))
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{max(0, minutes)}m"
