"""What the ``mmrl`` command modules share: printing an error, and turning the library's input
errors (``MMRLError``) into one line and exit status 1.

Used by ``mmrl_harness.cli``, ``mmrl_harness.plugin_tools.cli`` and
``mmrl_harness.leaderboard.cli`` (which ``mmrl_harness.cli`` imports, so it cannot import
``mmrl_harness.cli`` back). typer is imported inside the functions that raise ``typer.Exit``:
the console script's fast listing path (``mmrl_harness.entry``) prints errors with
``print_error`` without importing typer at all.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

from rich.console import Console

err_console = Console(stderr=True)


def print_error(message: str) -> None:
    """Print ``error: MESSAGE`` to stderr, "error:" in bold red (rich markup is interpreted)."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print the error (``print_error``) and end the command with exit status ``code``."""
    import typer

    print_error(message)
    raise typer.Exit(code)


def fail_plain(message: str) -> NoReturn:
    """Print ``error: MESSAGE`` to stderr as plain text and end the command with status 1.

    For messages that hold field paths like ``records[3]``, which must print as they are.
    """
    import typer

    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1) from None


@contextmanager
def user_errors(plain: bool = False) -> Iterator[None]:
    """Turn the library's input errors into one clear line (MMRL_DEBUG=1 keeps the traceback).

    Only ``MMRLError``s: any other exception is a bug and keeps its traceback. ``plain`` prints
    the message as plain text (``fail_plain``) instead of through rich (``fail``).
    """
    from mmrl_harness.errors import MMRLError

    try:
        yield
    except MMRLError as err:
        if os.environ.get("MMRL_DEBUG"):
            raise
        (fail_plain if plain else fail)(str(err))
