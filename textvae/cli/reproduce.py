"""`textvae reproduce SUITE -o DIR`: every method × seed of a suite trained, evaluated and reported, resumably."""

from __future__ import annotations

import shlex
import sys
from datetime import datetime
from pathlib import Path

import typer

from textvae.cli.app import setup_logging


def reproduce(
    suite_name: str = typer.Argument(..., metavar="SUITE", help="A suite name (recipes/suites/NAME.yaml) or file."),
    out: Path = typer.Option(..., "--out", "-o", help="Suite folder: runs/, logs/, results.json, report.html/.md."),
    seeds: str | None = typer.Option(None, "--seeds", help="Seeds instead of the suite's, e.g. 1,2,3."),
    device: str | None = typer.Option(None, "--device", help="cpu or cuda[:N] for every run (default: recipes')."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Runs at once (processes; each gets cores/N threads)."),
    only: str | None = typer.Option(None, "--only", help="Only these methods, e.g. vanilla,aggressive-anneal."),
    budget: str = typer.Option("full", "--budget", help="full, or smoke: every run shrunk to a few steps."),
    status_every: float = typer.Option(60.0, "--status-every", help="Seconds between progress lines."),
    report_only: bool = typer.Option(
        False, "--report-only", help="Write the report from what is finished; train nothing."
    ),
) -> None:
    """Train and evaluate every (method, seed) of SUITE as run directories DIR/runs/METHOD/seed-S, then write
    DIR/results.json, DIR/report.md and DIR/report.html: mean ± sd over seeds of IW-NLL, ELBO-NLL, KL, MI, AU,
    PPL, recon BLEU and training time (and its ratio to the suite's baseline row), beside the published rows.

    Rerunning the same command after a kill skips finished runs and evaluations and resumes killed runs from
    their newest checkpoint (`textvae train --resume`); nothing finished is repeated. Logs: DIR/logs/.
    """
    setup_logging()
    from textvae.errors import TextVAEError
    from textvae.suites.driver import Driver, Options, locked, plan
    from textvae.suites.report import write_report
    from textvae.suites.results import collect
    from textvae.suites.suite import load_suite, parse_seeds

    if budget not in ("full", "smoke"):
        raise TextVAEError(f"--budget {budget!r}: expected full or smoke")
    suite = load_suite(suite_name)
    methods = [name.strip() for name in only.split(",") if name.strip()] if only else None
    for name in methods or []:
        suite.method(name)  # an unknown name is an error before anything runs
    opts = Options(out, parse_seeds(seeds), methods, budget, device, jobs, status_every)  # type: ignore[arg-type]
    command = "textvae " + " ".join(shlex.quote(arg) for arg in sys.argv[1:])

    def report(job=None) -> dict:
        results = collect(suite, out, opts.seeds, None, opts.budget)  # every row: --only limits what runs
        write_report(results, out, command)
        return results

    def say(line: str) -> None:
        typer.echo(f"{datetime.now():%H:%M:%S} {line}", err=True)

    with locked(out):
        jobs_ = plan(suite, opts)
        failed = [] if report_only else Driver(suite, opts, say, report).run(jobs_)
        results = report()
    for line in results["findings"]:
        typer.echo(f"- {line}")
    typer.echo(f"report: {out / 'report.html'}  (Markdown: {out / 'report.md'}, numbers: {out / 'results.json'})")
    if failed:
        raise TextVAEError(
            f"{len(failed)} run(s) failed: " + "; ".join(f"{job.key}: {job.failed}" for job in failed[:3])
        )
