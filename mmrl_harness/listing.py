"""What ``mmrl plugins`` and ``mmrl tasks`` print.

Shared by the typer commands (``mmrl_harness.plugin_tools.cli``, ``mmrl_harness.cli``) and the
console script's fast path (``mmrl_harness.entry``), so both print the same bytes. Imports rich,
the plugin registry and the task YAML reader only: no typer, pydantic or torch (``load=True``
imports the plugins themselves, and with them torch).
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def plugin_kinds(kind: str | None) -> list[str]:
    """The plugin kinds to list: ``[kind]``, or every kind when ``kind`` is None or empty.

    Raises ``UnknownPluginError`` (a ``PluginError``, with the closest kind) for an unknown kind.
    """
    from mmrl_harness.registry import KINDS, get_registry

    return [get_registry(kind).kind] if kind else list(KINDS)


def print_plugins(console: Console, kinds: list[str], load: bool = False) -> int:
    """Print the plugins table of ``kinds`` and return how many plugins cannot be used.

    ``load`` imports every plugin to check it (status ok or failed); without it only entry-point
    metadata is read (status available). A note follows the table when some cannot be used.
    """
    from mmrl_harness.registry import PluginError, get_registry

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
        for name, info in sorted(registry.disabled().items()):
            table.add_row(name, k, info.distribution, info.version, "[dim]disabled[/]")
    console.print(table)
    if failures:
        console.print(f"{failures} plugin(s) cannot be used; the others work.", style="yellow")
    return failures


def print_tasks(console: Console, check: bool = False) -> None:
    """Print the tasks table: name, kind, env, plugin, description (or, red, the error).

    Reads the YAML only; ``check`` also validates every definition (slower).
    """
    from mmrl_harness.tasks import list_tasks

    table = Table(title="mmrl-harness tasks", title_justify="left")
    for column in ("name", "kind", "env", "plugin"):
        table.add_column(column, no_wrap=True)
    table.add_column("description")
    for summary in list_tasks(check=check):
        about = f"[red]{summary.error}[/]" if summary.error else summary.description
        table.add_row(summary.name, summary.kind, summary.env, summary.plugin, about)
    console.print(table)
