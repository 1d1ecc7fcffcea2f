"""The ``mmrl`` console script and ``python -m mmrl_harness``.

The two listing commands, ``mmrl plugins [--kind KIND] [--load/--no-load]`` and
``mmrl tasks [--check]``, are answered here without building the typer app of
``mmrl_harness.cli``: typer imports pydantic to convert option values and builds every command's
parameters, which costs more than the listing itself. Both paths print through
``mmrl_harness.listing``, so their output is the same, byte for byte (tests compare them).

Everything else goes to the typer app, which stays the one definition of the command line:
other commands and subcommands (``plugins doctor``, ``tasks show``), ``--help``, any option or
spelling this small parser does not take (an unknown option is typer's error to report), and
shell completion requests.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Listing:
    """A listing command line: which command and its options (defaults as in the typer app)."""

    command: Literal["plugins", "tasks"]
    kind: str | None = None
    load: bool = False
    check: bool = False


def parse_listing(args: Sequence[str]) -> Listing | None:
    """``args`` (without the program name) as a listing command, or None to leave it to typer.

    Takes exactly what typer takes for these commands, in any order, the last of a repeated
    option winning: ``--kind VALUE``, ``--kind=VALUE``, ``--load``, ``--no-load``; ``--check``.
    A ``--kind`` value that starts with ``-`` is left to typer (it may be a missing value).
    """
    if not args or args[0] not in ("plugins", "tasks"):
        return None
    command, rest = args[0], list(args[1:])
    kind: str | None = None
    load = check = False
    i = 0
    while i < len(rest):
        token = rest[i]
        if command == "tasks" and token == "--check":
            check = True
        elif command == "plugins" and token in ("--load", "--no-load"):
            load = token == "--load"
        elif command == "plugins" and token.startswith("--kind="):
            kind = token.removeprefix("--kind=")
        elif command == "plugins" and token == "--kind" and i + 1 < len(rest):
            if rest[i + 1].startswith("-"):
                return None
            kind = rest[i + 1]
            i += 1
        else:
            return None
        i += 1
    return Listing("plugins" if command == "plugins" else "tasks", kind, load, check)


def run_listing(listing: Listing) -> int:
    """Print the listing as the typer command does and return its exit status."""
    from rich.console import Console

    from mmrl_harness.cli_support import print_error
    from mmrl_harness.listing import plugin_kinds, print_plugins, print_tasks
    from mmrl_harness.registry import PluginError

    console = Console()
    if listing.command == "tasks":
        print_tasks(console, check=listing.check)
        return 0
    try:
        kinds = plugin_kinds(listing.kind)
    except PluginError as err:
        print_error(str(err))
        return 1
    # --load is a check: a plugin that cannot be used fails the command.
    return 1 if print_plugins(console, kinds, load=listing.load) and listing.load else 0


def _completion_requested() -> bool:
    """Whether the shell asks for completions (click's ``_PROG_COMPLETE`` variable is set)."""
    return any(name.startswith("_") and name.endswith("_COMPLETE") for name in os.environ)


def main() -> None:
    """Entry point of the ``mmrl`` console script and ``python -m mmrl_harness``."""
    listing = None if _completion_requested() else parse_listing(sys.argv[1:])
    if listing is None:
        from mmrl_harness.cli import main as typer_main

        typer_main()
        return
    try:
        code = run_listing(listing)
    except KeyboardInterrupt:
        code = 130  # as typer: Ctrl-C ends the command with status 130, no traceback
    except BrokenPipeError:
        # As typer: the reader went away (`mmrl plugins | head -3`); status 1, and no complaint
        # from the interpreter when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 1
    sys.exit(code)
