"""The leaderboard commands: ``mmrl submit``, ``mmrl leaderboard show|render|reproduce``,
``mmrl export-hub``. Thin wrappers: the logic lives in the sibling modules.

``register(app)`` adds them to the main ``mmrl`` app; only typer and rich are imported here.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from mmrl_harness.cli_support import user_errors

console = Console()
leaderboard_app = typer.Typer(
    help="Show, render and reproduce leaderboards (see docs/leaderboards.md).",
    no_args_is_help=True,
)

#: An ``MMRLError`` becomes one line and exit 1. Plain text, not rich markup: field paths like
#: records[3] in verification messages must print as they are.
_user_errors = partial(user_errors, plain=True)

BoardsDir = Annotated[
    str, typer.Option("--boards-dir", help="Folder holding the boards (one folder each).")
]


def submit_command(
    paths: Annotated[list[str], typer.Argument(metavar="RESULTS.json...", help="Results files.")],
    board: Annotated[str, typer.Option("--board", help="Board name (a folder in --boards-dir).")],
    boards_dir: BoardsDir = "leaderboards",
) -> None:
    """Check results files against a board and store them (all or none).

    Runs every `mmrl verify` check, then the board's: tasks and seeds, provenance, duplicates,
    training seeds, size. The stored copy has local paths and user names removed.
    """
    from mmrl_harness.leaderboard.submit import submit

    with _user_errors():
        accepted = submit(list(paths), board, boards_dir)
    for item in accepted:
        typer.echo(f"accepted {item.source} -> {item.stored} (entry {item.entry})")
        # The stored copy is sanitised, so its document digest differs from the original's.
        typer.echo(
            f"  document_sha256 {item.original_document_sha256} (original) -> "
            f"{item.stored_document_sha256} (stored)"
        )
    typer.echo(f"render the page: mmrl leaderboard render {board} --boards-dir {boards_dir}")


@leaderboard_app.command("show")
def show_command(name: str, boards_dir: BoardsDir = "leaderboards") -> None:
    """Print the ranked table of a board."""
    from mmrl_harness.leaderboard.board import Board
    from mmrl_harness.leaderboard.ranking import fmt_ci, fmt_column, rank_entries

    with _user_errors():
        board = Board(name, boards_dir)
        rows = rank_entries(board)
    rule = board.spec.ranking
    table = Table(title=board.spec.title, title_justify="left")
    for column in (
        "rank",
        "entry",
        "key",
        "plugin",
        "runs",
        f"{rule.aggregate.upper()} {rule.metric} (CI)",
        *board.spec.tasks,
        *board.spec.secondary,
    ):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            str(row.rank),
            row.entry.label,
            row.entry.key,
            row.entry.plugin,
            str(len(row.entry.runs)),
            fmt_ci(row.score),
            *(fmt_ci(row.per_task[t]) for t in board.spec.tasks),
            *(fmt_column(c, row.secondary[c]) for c in board.spec.secondary),
        )
    console.print(table)


@leaderboard_app.command("render")
def render_command(name: str, boards_dir: BoardsDir = "leaderboards") -> None:
    """Write the board's README.md and a self-contained index.html."""
    from mmrl_harness.leaderboard.render import render

    with _user_errors():
        readme, page = render(name, boards_dir)
    typer.echo(f"wrote {readme} and {page} (open {page.as_uri()})")


@leaderboard_app.command("reproduce")
def reproduce_command(
    name: str,
    entry: Annotated[str, typer.Argument(help="Entry key or stored file digest (a prefix).")],
    episodes: Annotated[int, typer.Option(help="Episodes re-run per task and run.")] = 4,
    checkpoint: Annotated[
        str | None, typer.Option(help="Local checkpoint folder, if the entry's is elsewhere.")
    ] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda ... (default: auto).")] = None,
    boards_dir: BoardsDir = "leaderboards",
) -> None:
    """Re-run K episodes of an entry and compare them with the submitted records."""
    from mmrl_harness.leaderboard.reproduce import reproduce

    with _user_errors():
        outcomes = reproduce(
            name, entry, episodes, boards_dir=boards_dir, checkpoint=checkpoint, device=device
        )
    for outcome in outcomes:
        state = "verified" if outcome.verified else "NOT verified"
        why = outcome.skipped or "; ".join(outcome.mismatches[:5]) or ""
        typer.echo(f"{state}  {outcome.run.name} ({outcome.episodes} episodes) {why}".rstrip())
    if not all(o.verified for o in outcomes):
        raise typer.Exit(1)


def export_hub_command(
    results: Annotated[str, typer.Argument(metavar="RESULTS.json", help="A results file.")],
    out: Annotated[str, typer.Option("--out", help="Model repository folder to write into.")],
    model_name: Annotated[str, typer.Option(help="Model name for the card.")] = "my-adapter",
    metric: Annotated[str, typer.Option(help="Metric exported per task.")] = "success_rate",
    dataset_prefix: Annotated[str, typer.Option(help="Prefix of dataset ids.")] = "mmrl-harness",
    source_url: Annotated[str | None, typer.Option(help="Where the result is shown.")] = None,
    source_user: Annotated[str | None, typer.Option(help="Hub user who ran it.")] = None,
) -> None:
    """Write .eval_results/*.yaml and a model card with model-index metadata (no upload)."""
    from mmrl_harness.leaderboard.hub import HubSource, export_hub

    with _user_errors():
        paths = export_hub(
            results,
            out,
            model_name=model_name,
            metric=metric,
            dataset_prefix=dataset_prefix,
            source=HubSource(url=source_url, user=source_user),
        )
    for path in paths:
        typer.echo(f"wrote {path}")


def register(app: typer.Typer) -> None:
    """Add the leaderboard commands to the ``mmrl`` app."""
    app.command("submit")(submit_command)
    app.command("export-hub")(export_hub_command)
    app.add_typer(leaderboard_app, name="leaderboard")
