"""Commands that wrap other commands: typer reads a wrapper's signature, so a wrapper that adds options gets
the combined signature of the command's own parameters and the added ones."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterable


def own_parameters(command: Callable, leave_out: Iterable[str] = ()) -> list[inspect.Parameter]:
    """`command`'s parameters with their annotations resolved (typer needs the `Annotated[...]` objects)."""
    hints = typing.get_type_hints(command, include_extras=True)
    skipped = set(leave_out)
    return [
        p.replace(annotation=hints.get(name, p.annotation))
        for name, p in inspect.signature(command).parameters.items()
        if name not in skipped
    ]


def with_signature(wrapper: Callable, parameters: list[inspect.Parameter]) -> Callable:
    """`wrapper` (made with functools.wraps) presenting `parameters` to typer instead of the wrapped signature."""
    wrapper.__signature__ = inspect.Signature(parameters)
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    del wrapper.__wrapped__  # typer follows __wrapped__ to the command's own signature otherwise
    return wrapper
