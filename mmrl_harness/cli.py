"""The ``mmrl`` command line: thin wrappers over library functions (no logic lives here).

Heavy modules (torch, transformers) are imported inside commands, so listing commands start fast.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from mmrl_harness import __version__

app = typer.Typer(
    name="mmrl",
    help="Fine-tune vision-language models with RL and compare image-text fusion strategies.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def _fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn the library's input errors into one clear line (MMRL_DEBUG=1 keeps the traceback)."""
    from mmrl_harness.registry import PluginError

    try:
        yield
    except (PluginError, ValueError, OSError) as err:
        if os.environ.get("MMRL_DEBUG"):
            raise
        _fail(str(err))


@app.command()
def version() -> None:
    """Print the harness version and the plugin API version."""
    from mmrl_harness.registry import PLUGIN_API_VERSION

    console.print(f"mmrl-harness {__version__} (plugin API {PLUGIN_API_VERSION})")


@app.command()
def plugins(
    kind: Annotated[
        str | None, typer.Option(help="Only this kind: fusion, tasks or architectures.")
    ] = None,
    load: Annotated[
        bool,
        typer.Option(
            "--load/--no-load",
            help="Import every plugin to check it (slower: imports torch). Without it, only "
            "entry-point metadata is read.",
        ),
    ] = False,
) -> None:
    """List installed plugins: name, kind, distribution, version and status."""
    from mmrl_harness.registry import KINDS, PluginError, get_registry

    try:
        kinds = [get_registry(kind).kind] if kind else list(KINDS)
    except PluginError as err:
        _fail(str(err))
    table = Table(title="mmrl-harness plugins", title_justify="left")
    for column in ("name", "kind", "distribution", "version", "status"):
        table.add_column(column)
    failures = 0
    for k in kinds:
        registry = get_registry(k)
        loaded = registry.load_all() if load else {}
        for name, info in sorted(registry.infos().items()):
            result = loaded.get(name)
            if info.malformed:
                status = f"[red]invalid:[/] {info.malformed}"
            elif isinstance(result, PluginError):
                status = f"[red]failed:[/] {result}"
            elif load:
                status = "[green]ok[/]"
            else:
                status = "available"
            failures += status.startswith("[red]")
            table.add_row(name, k, info.distribution, info.version, status)
    console.print(table)
    if failures:
        console.print(f"{failures} plugin(s) cannot be used; the others work.", style="yellow")


@app.command()
def quickstart(
    family: Annotated[str, typer.Option(help="Tiny model family: llava or qwen2_vl.")] = "llava",
) -> None:
    """Build a tiny VLM offline and ask it a question about a generated image."""
    from mmrl_harness.quickstart import run_quickstart

    with _user_errors():
        run_quickstart(family=family, console=console)


def main() -> None:
    """Entry point of the ``mmrl`` console script and ``python -m mmrl_harness``."""
    app()


if __name__ == "__main__":
    main()
