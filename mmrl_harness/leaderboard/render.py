"""Render a board: ``README.md`` (Markdown table) and ``index.html`` (one self-contained page).

The page works from the file system: no server, no network, no script; its CSS is inline and
its two plots are inline SVG drawn with matplotlib's Agg backend (reward against cost with the
Pareto front, and the aggregate per adapter with its CI). Each entry links to its runs' stored
results files (relative links into ``submissions/``), which carry the full provenance. Every
string from a submission is HTML-escaped.
"""

from __future__ import annotations

import html
import os
import tempfile
from pathlib import Path
from typing import Any

from mmrl_harness.leaderboard.board import SUBMISSIONS, Board
from mmrl_harness.leaderboard.ranking import MISSING, Row, fmt_ci, fmt_column, rank_entries

_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:72rem;color:#222}
table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}
th,td{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums}
.plots{display:flex;flex-wrap:wrap;gap:1rem} .plots figure{margin:0;max-width:34rem}
code{font-size:.85rem} .muted{color:#666}
"""


def render(name: str, boards_dir: str | Path = "leaderboards") -> tuple[Path, Path]:
    """Write the board's ``README.md`` and ``index.html``; returns their paths."""
    board = Board(name, boards_dir)
    rows = rank_entries(board)
    readme = board.inside(board.root / "README.md")
    page = board.inside(board.root / "index.html")
    _atomic_text(readme, markdown(board, rows))
    _atomic_text(page, html_page(board, rows))
    return readme, page


def _headers(board: Board) -> list[str]:
    rule = board.spec.ranking
    return [
        "rank",
        "entry",
        "adapter plugin",
        "runs",
        f"{rule.aggregate.upper()} {rule.metric} ({rule.confidence:.0%} CI)",
        *board.spec.tasks,
        *(column.replace("_", " ") for column in board.spec.secondary),  # lets headers wrap
        "provenance",
    ]


def _cells(board: Board, row: Row, link: Any) -> list[str]:
    links = " ".join(
        link(f"{SUBMISSIONS}/{run.path.name}", f"seed {run.seed if run.seed is not None else '?'}")
        for run in row.entry.runs
    )
    return [
        str(row.rank),
        f"{row.entry.label} ({row.entry.key})",
        row.entry.plugin,
        str(len(row.entry.runs)),
        fmt_ci(row.score),
        *(fmt_ci(row.per_task[t]) for t in board.spec.tasks),
        *(fmt_column(c, row.secondary[c]) for c in board.spec.secondary),
        links,
    ]


def markdown(board: Board, rows: list[Row]) -> str:
    """The board as Markdown: title, description, ranked table, how to read it."""
    spec = board.spec

    def link(href: str, text: str) -> str:
        return f"[{text}]({href})"

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [f"# {spec.title}", "", spec.description.strip(), ""]
    lines += ["| " + " | ".join(_headers(board)) + " |", "|" + "---|" * len(_headers(board))]
    for row in rows:
        lines.append("| " + " | ".join(cell(c) for c in _cells(board, row, link)) + " |")
    if not rows:
        lines.append(f"\n_No submissions yet: `mmrl submit RESULTS.json --board {board.name}`._")
    lines += [
        "",
        _legend(board),
        "",
        f"Rendered by `mmrl leaderboard render {board.name}`; the page with plots is `index.html`.",
        "",
    ]
    return "\n".join(lines)


def _legend(board: Board) -> str:
    rule = board.spec.ranking
    return (
        f"Ranked by the {rule.aggregate.upper()} of `{rule.metric}` over every (training seed, "
        f"task) score of an entry, with a {rule.confidence:.0%} stratified-bootstrap percentile "
        f"interval ({rule.bootstrap_reps} replicates). Per-task columns aggregate that task's "
        f"runs. {MISSING} marks a value the submitted files do not hold. Every number was "
        "recomputed from the episode records when submitted (`mmrl verify`)."
    )


def html_page(board: Board, rows: list[Row]) -> str:
    """The board as one self-contained HTML page (inline CSS and SVG, no script)."""
    from mmrl_harness.leaderboard.plots import adapter_svg, pareto_svg

    spec = board.spec
    esc = html.escape

    def link(href: str, text: str) -> str:
        return f'<a href="{esc(href)}">{esc(text)}</a>'

    head = "".join(f"<th>{esc(h)}</th>" for h in _headers(board))
    body = []
    for row in rows:
        cells = _cells(board, row, link)
        tds = [f"<td>{esc(c)}</td>" for c in cells[:-1]] + [f"<td>{cells[-1]}</td>"]
        body.append(f'<tr class="entry" id="entry-{esc(row.entry.key)}">{"".join(tds)}</tr>')
    plots = ""
    if rows:
        plots = (
            '<div class="plots">'
            f'<figure id="plot-pareto">{pareto_svg(board, rows)}'
            "<figcaption>Score against evaluation cost; the line is the Pareto front."
            "</figcaption></figure>"
            f'<figure id="plot-adapters">{adapter_svg(board, rows)}'
            "<figcaption>Aggregate per adapter with its CI.</figcaption></figure></div>"
        )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(spec.title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{esc(spec.title)}</h1><p>{esc(spec.description.strip())}</p>"
        f'<table id="ranking"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
        f'</table><p class="muted">{esc(_legend(board))}</p>{plots}'
        f'<p class="muted">Rendered by <code>mmrl leaderboard render {esc(board.name)}</code>.'
        "</p></body></html>\n"
    )


def _atomic_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
