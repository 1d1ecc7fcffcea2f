"""The report as text: one table per task (terminal, Markdown, HTML) and its recommendation.

Every renderer reads the same :func:`task_table` (headers and formatted cells), so the three
outputs always show the same numbers. Nothing here has a timestamp: rerunning the report on the
same results files gives identical files.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich.table import Table

from mmrl_harness.experiments.collect import MISSING, FailedCell
from mmrl_harness.experiments.summary import Row, TaskSummary, cost_per_success

#: Units of the cost measures, as shown.
MEASURE_UNITS = {"money": "money", "cpu_s": "CPU-s", "wall_s": "wall-s"}


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for a table cell: ``–`` when absent, ``∞`` for infinity, else ``digits``
    significant figures (large values in engineering-like ``1.2e+06`` form)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if math.isinf(value):
        return "∞"
    return f"{value:.{digits}g}"


def fmt_count(value: float | None) -> str:
    """A count (parameters) with thousands separators, ``–`` when absent."""
    return MISSING if value is None else f"{round(value):,}"


def fmt_ci(row: Row) -> str:
    """``IQM [low, high]``, three decimals each."""
    low, high = row.iqm.ci_low, row.iqm.ci_high
    interval = MISSING if low is None or high is None else f"{low:.3f}, {high:.3f}"
    return f"{row.iqm.value:.3f} [{interval}]"


@dataclass(frozen=True)
class Column:
    """A table column: its header, how a row's cell is written, and whether the (narrower)
    terminal table shows it too."""

    header: str
    cell: Callable[[Row, TaskSummary], str]
    terminal: bool = False


def _within(name: str) -> Callable[[Row, TaskSummary], str]:
    return lambda row, _s: fmt(row.within_run.get(name))


COLUMNS: tuple[Column, ...] = (
    Column("runs", lambda r, _s: str(len(r.scores)), terminal=True),
    Column("IQM [95% CI]", lambda r, _s: fmt_ci(r), terminal=True),
    Column("mean", lambda r, _s: fmt(r.mean)),
    Column("IQR", lambda r, _s: fmt(r.iqr), terminal=True),
    Column("CI width", lambda r, _s: fmt(r.ci_width)),
    Column("DT", _within("dispersion_across_time"), terminal=True),
    Column("SRT", _within("short_term_risk")),
    Column("LRT", _within("long_term_risk")),
    Column("collapsed", _within("collapsed"), terminal=True),
    Column("length", lambda r, _s: fmt(r.episode_length), terminal=True),
    Column("steps to success", lambda r, _s: fmt(r.steps_to_success)),
    Column("length / optimal", lambda r, _s: fmt(r.length_ratio)),
    Column("train wall s", lambda r, _s: fmt(r.train_wall_s)),
    Column("train CPU s", lambda r, _s: fmt(r.train_cpu_s), terminal=True),
    Column("eval tokens/s", lambda r, _s: fmt(r.tokens_per_s)),
    Column("peak MiB", lambda r, _s: fmt(r.peak_memory_mib, 4), terminal=True),
    Column("trainable params", lambda r, _s: fmt_count(r.trainable_params), terminal=True),
    Column("FLOPs/step", lambda r, _s: fmt(r.flops_per_step)),
    Column("money", lambda r, _s: fmt(r.money)),
    Column(
        "cost / success",
        lambda r, s: fmt(cost_per_success(r, s.cost_measure, s.score)),
        terminal=True,
    ),
)


def task_table(
    summary: TaskSummary, *, terminal: bool = False
) -> tuple[list[str], list[list[str]]]:
    """Headers and rows (strings) of one task's table, best configuration first; ``terminal``
    keeps only the columns marked for the terminal."""
    columns = [c for c in COLUMNS if c.terminal or not terminal]
    headers = ["rank", "adapter", *(c.header for c in columns)]
    rows = [
        [str(rank), row.label, *(c.cell(row, summary) for c in columns)]
        for rank, row in enumerate(summary.rows, start=1)
    ]
    return headers, rows


def recommendation_line(summary: TaskSummary) -> str:
    """``best: X (IQM ...); cheapest within its CI: Y (cost ...)``."""
    rec = summary.recommendation
    unit = MEASURE_UNITS[rec.measure]
    best, cheap = rec.best, rec.cheapest
    line = f"best: {best.label} (IQM {fmt_ci(best)})"
    if cheap is best:
        return f"{line}; it is also the cheapest of those whose CI overlaps it ({unit})."
    return (
        f"{line}; cheapest whose CI overlaps it: {cheap.label} (IQM {fmt_ci(cheap)}, "
        f"{unit} {fmt(cheap.costs[rec.measure])} vs {fmt(best.costs[rec.measure])})."
    )


def _task_title(summary: TaskSummary) -> str:
    return f"{summary.task}: ranked by IQM of {summary.score} across runs"


def rich_tables(summaries: Sequence[TaskSummary]) -> list[Table]:
    """One rich table per task, its caption the recommendation."""
    tables = []
    for summary in summaries:
        headers, rows = task_table(summary, terminal=True)
        table = Table(
            title=_task_title(summary),
            title_justify="left",
            caption=recommendation_line(summary),
            caption_justify="left",
        )
        for header in headers:
            table.add_column(header, overflow="fold")
        for cells in rows:
            table.add_row(*cells)
        tables.append(table)
    return tables


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [line(headers), "| " + " | ".join("---" for _ in headers) + " |", *map(line, rows)]


def _robustness_table(summary: TaskSummary) -> tuple[list[str], list[list[str]]] | None:
    names = sorted({name for row in summary.rows for name in row.robustness})
    if not names:
        return None
    rows = [[row.label, *(fmt(row.robustness.get(n)) for n in names)] for row in summary.rows]
    return ["adapter", *names], rows


def markdown(
    summaries: Sequence[TaskSummary],
    plots: dict[str, list[str]],
    failed: Sequence[FailedCell],
    num_runs: int,
) -> str:
    """The whole report as Markdown; ``plots`` maps a task to its figure paths (relative)."""
    lines = ["# Fusion adapter report", "", f"{num_runs} results file(s). {LEGEND}", ""]
    for summary in summaries:
        headers, rows = task_table(summary)
        lines += [f"## {_task_title(summary)}", "", *_md_table(headers, rows), ""]
        lines += [f"**Recommendation:** {recommendation_line(summary)}", ""]
        robust = _robustness_table(summary)
        if robust:
            lines += ["Robustness (drop of the score under each perturbation, mean over runs):", ""]
            lines += [*_md_table(*robust), ""]
        lines += [f"![{path}]({path})" for path in plots.get(summary.task, [])]
        lines += [""] if plots.get(summary.task) else []
    if failed:
        lines += ["## Failed sweep cells", ""]
        lines += [*_md_table(["cell", "error"], [[c.cell_id, c.error] for c in failed]), ""]
    return "\n".join(lines).rstrip() + "\n"


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_STYLE = (
    "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
    "th,td{border:1px solid #bbb;padding:3px 6px;text-align:right;font-size:13px}"
    "td:nth-child(2),th:nth-child(2){text-align:left}figure{display:inline-block;margin:0}"
    "figure svg,figure img{max-width:640px;height:auto}"
)


def html_page(
    summaries: Sequence[TaskSummary],
    figures: dict[str, list[str]],
    failed: Sequence[FailedCell],
    num_runs: int,
) -> str:
    """The whole report as one self-contained HTML page; ``figures`` maps a task to its
    figures as inline HTML (an ``<svg>`` element or an ``<img>`` with a data URI)."""
    parts = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8"><title>Fusion adapter report</title>',
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Fusion adapter report</h1>",
        f"<p>{num_runs} results file(s). {html.escape(LEGEND)}</p>",
    ]
    for summary in summaries:
        parts.append(f"<h2>{html.escape(_task_title(summary))}</h2>")
        parts.append(_html_table(*task_table(summary)))
        parts.append(f"<p><b>Recommendation:</b> {html.escape(recommendation_line(summary))}</p>")
        robust = _robustness_table(summary)
        if robust:
            parts.append("<p>Robustness (drop under each perturbation, mean over runs):</p>")
            parts.append(_html_table(*robust))
        parts += [f"<figure>{figure}</figure>" for figure in figures.get(summary.task, [])]
    if failed:
        parts.append("<h2>Failed sweep cells</h2>")
        parts.append(_html_table(["cell", "error"], [[c.cell_id, c.error] for c in failed]))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


LEGEND = (
    "IQM: interquartile mean over runs (training seeds) with a 95 % stratified-bootstrap CI; "
    "IQR and CI width: spread across runs; DT/SRT/LRT/collapsed: within-run stability "
    "(dispersion across time, short- and long-term risk, fraction of runs that collapsed); "
    "costs are means over runs; cost / success = cost measure / mean success rate; "
    "the terminal shows a subset of the columns; – = not recorded."
)
