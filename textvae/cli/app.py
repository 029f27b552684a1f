"""The `textvae` command: typer sub-commands over the Python API, one error handler for all."""

from __future__ import annotations

import logging
import os
import sys

import typer

from textvae.errors import TextVAEError

app = typer.Typer(
    help="Sentence and document VAEs/WAEs: train from a recipe, evaluate by the standard protocol, report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def setup_logging(verbose: bool = False) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, show_time=False, markup=False)],
    )
    for noisy in ("datasets", "transformers", "huggingface_hub", "filelock", "fsspec", "urllib3", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def quiet_libraries() -> None:
    """No progress bars or chatter from the Hugging Face libraries: textvae shows its own."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def with_plugins(command):
    """The command with a `--plugin FILE` option (repeatable): the files are imported before it runs, so the
    objectives, update rules, architectures, priors or datasets they register are known to it."""
    import functools
    import inspect
    from pathlib import Path

    from textvae.cli.signatures import own_parameters, with_signature

    option = inspect.Parameter(
        "plugin",
        inspect.Parameter.KEYWORD_ONLY,
        annotation=list[Path],
        default=typer.Option(
            [],
            "--plugin",
            help="A Python file that registers methods (repeatable); also the textvae.plugins "
            "entry points of installed packages.",
            show_default=False,
        ),
    )

    @functools.wraps(command)
    def wrapper(*args, plugin: list[Path], **kwargs):
        from textvae.plugins import load_plugin_files

        load_plugin_files(plugin)
        return command(*args, **kwargs)

    return with_signature(wrapper, [*own_parameters(command), option])


def _register_commands() -> None:
    from textvae.cli import data, evaluate, generate, probe, quickstart, report, reproduce, train

    app.command("train")(with_plugins(train.train))
    app.command("eval")(with_plugins(evaluate.evaluate))
    app.command("quickstart")(quickstart.quickstart)
    app.command("report")(with_plugins(report.report))
    app.command("reproduce")(with_plugins(reproduce.reproduce))
    app.command("sample")(with_plugins(generate.sample))
    app.command("reconstruct")(with_plugins(generate.reconstruct))
    app.command("interpolate")(with_plugins(generate.interpolate))
    app.command("transfer")(with_plugins(generate.transfer))
    app.command("analogy")(with_plugins(generate.analogy))
    app.command("probe")(with_plugins(probe.probe))
    app.add_typer(data.app, name="data")


def main() -> None:
    """Entry point: user errors print one line (a traceback only with TEXTVAE_DEBUG=1) and exit 1."""
    debug = os.environ.get("TEXTVAE_DEBUG") == "1"
    _register_commands()
    try:
        app()
    except TextVAEError as err:
        if debug:
            raise
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(130)
    except Exception as err:  # noqa: BLE001 - the one place that turns crashes into one line
        if debug:
            raise
        first = str(err).splitlines()[0] if str(err) else ""
        typer.secho(
            f"error: {type(err).__name__}: {first} (set TEXTVAE_DEBUG=1 for the traceback)",
            fg=typer.colors.RED,
            err=True,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
