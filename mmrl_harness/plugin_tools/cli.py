"""``mmrl plugins``: list plugins (the group's own command), ``doctor`` and ``new``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from mmrl_harness.cli_support import fail as _fail

if TYPE_CHECKING:
    from mmrl_harness.testing.report import ContractReport

plugins_app = typer.Typer(
    help="List installed plugins; check them (doctor); scaffold a new one (new).",
    invoke_without_command=True,
    no_args_is_help=False,
)
console = Console()


@plugins_app.callback()
def plugins(
    ctx: typer.Context,
    kind: Annotated[
        str | None,
        typer.Option(help="Only this kind: fusion, tasks, architectures or algorithms."),
    ] = None,
    load: Annotated[
        bool,
        typer.Option(
            "--load/--no-load",
            help="Import every plugin to check it (slower: imports torch) and exit 1 if any "
            "failed. Without it, only entry-point metadata is read.",
        ),
    ] = False,
) -> None:
    """List installed plugins: name, kind, distribution, version and status."""
    if ctx.invoked_subcommand is not None:
        return
    # The listing is shared with the console script's fast path (mmrl_harness.entry).
    from mmrl_harness.listing import plugin_kinds, print_plugins
    from mmrl_harness.registry import PluginError

    try:
        kinds = plugin_kinds(kind)
    except PluginError as err:
        _fail(str(err))
    if print_plugins(console, kinds, load=load) and load:
        raise typer.Exit(1)


@plugins_app.command()
def doctor(
    name: Annotated[str | None, typer.Argument(help="Only this plugin (default: all).")] = None,
    kind: Annotated[str | None, typer.Option(help="Only plugins of this kind.")] = None,
    builtins: Annotated[
        bool, typer.Option("--builtins", help="Also check the harness's own plugins.")
    ] = False,
    family: Annotated[
        list[str] | None,
        typer.Option(help="Tiny model family to check fusion adapters on (repeatable)."),
    ] = None,
    check: Annotated[
        list[str] | None,
        typer.Option(help="Only this fusion check (repeatable), e.g. batch_invariance."),
    ] = None,
) -> None:
    """Run the mmrl_harness.testing contract checks on installed plugins; exit 1 on a failure."""
    from mmrl_harness.errors import MMRLError
    from mmrl_harness.plugin_tools.doctor import doctor as run_doctor

    try:
        reports = run_doctor(
            name, kind=kind, include_builtins=builtins, families=family, checks=check
        )
    except MMRLError as err:
        _fail(str(err))
    if not reports:
        console.print("No third-party plugins installed (--builtins checks the harness's own).")
        return
    for report in reports:
        _print_report(report)
    failed = [r for r in reports if not r.passed]
    if failed:
        _fail(
            f"{len(failed)} of {len(reports)} plugin check(s) failed: "
            + ", ".join(r.subject for r in failed)
        )
    console.print(f"[green]All {len(reports)} plugin check(s) passed.[/]")


def _print_report(report: ContractReport) -> None:
    from rich.markup import escape

    mark = "[green]passed[/]" if report.passed else "[red]FAILED[/]"
    title = f"{escape(report.subject)}: {mark}"
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("check")
    table.add_column("status")
    table.add_column("detail", overflow="fold")
    for result in report.results:
        # Check names hold "[family]", which rich would read as markup.
        status = "[green]ok[/]" if result.passed else "[red]fail[/]"
        table.add_row(escape(result.name), status, escape(result.detail))
    console.print(table)


@plugins_app.command()
def new(
    name: Annotated[str, typer.Argument(help="Registry name, e.g. my_film (a Python name).")],
    kind: Annotated[
        str, typer.Option(help="What the plugin adds: fusion, task or architecture.")
    ] = "fusion",
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Folder to write (default ./mmrl-NAME).")
    ] = None,
) -> None:
    """Write a ready-to-publish plugin package (pyproject, module, README, a contract test)."""
    from mmrl_harness.plugin_tools.scaffold import ScaffoldError, new_plugin

    try:
        target = new_plugin(kind, name, directory)
    except ScaffoldError as err:
        _fail(str(err))
    console.print(f"Wrote {kind} plugin {name!r} to {target}. Next:")
    console.print(f"  pip install -e '{target}[test]' && pytest {target}", highlight=False)
