"""``mmrl sweep``: train and evaluate every cell of a sweep file, resumably, into one folder.

``run_sweep`` reads the sweep file, expands its cells and checks every name (adapters, tasks,
env ids, algorithms) before any model loads; then it skips the cells whose results file already
verifies, runs the others with the chosen executor, and rewrites ``<out>/sweep.json`` atomically
after every cell. A cell that raises is recorded as ``failed`` with its error; the others go on.
``docs/sweeps.md`` is the user's guide.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmrl_harness.errors import InputError, MMRLError
from mmrl_harness.experiments.cell import (
    RESULTS_FILE,
    base_record,
    cell_folder,
    done_record,
    results_verify,
    write_json_atomic,
)
from mmrl_harness.experiments.executors import EXECUTORS, import_ray, run_local, run_ray
from mmrl_harness.experiments.spec import Cell, SweepError, SweepSpec, expand, load_sweep

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

#: The aggregate file in the sweep folder.
SWEEP_FILE = "sweep.json"
#: Format tag of the aggregate file.
SWEEP_FORMAT = "mmrl-sweep/1"


@dataclass
class SweepPlan:
    """A sweep file resolved: its spec, its cells, the sweep folder, and which cells are done."""

    source: Path
    spec: SweepSpec
    cells: list[Cell]
    output_dir: Path
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> record

    def todo(self) -> list[Cell]:
        """The cells still to run (pending or failed before)."""
        return [c for c in self.cells if self.records[c.id]["status"] != "done"]


def plan_sweep(sweep_file: str | Path, output_dir: str | Path | None = None) -> SweepPlan:
    """Read, expand and check the sweep (nothing is written); records say which cells are
    already done (their results file verifies) and keep those cells' earlier records."""
    source = Path(sweep_file)
    spec = load_sweep(source)
    out = Path(output_dir or spec.output_dir).resolve()
    cells = expand(spec, source, out)
    check_cells(cells)
    previous = _previous_records(out / SWEEP_FILE)
    plan = SweepPlan(source, spec, cells, out)
    for cell in cells:
        results = cell_folder(cell) / RESULTS_FILE
        old = previous.get(cell.id)
        if not results_verify(results):
            plan.records[cell.id] = base_record(cell, "pending")
        elif old is not None and old.get("status") == "done":
            plan.records[cell.id] = old
        else:  # finished under another sweep file, or sweep.json was lost: rebuild the record
            finished = datetime.fromtimestamp(results.stat().st_mtime, timezone.utc)
            plan.records[cell.id] = done_record(cell, results, None, finished.isoformat())
    return plan


def check_cells(cells: list[Cell]) -> None:
    """What ``train`` checks before loading a model, for every distinct cell setup: the
    adapter and algorithm are registered, the task resolves and its env builds, the algorithm
    accepts the task. Raises a ``SweepError`` naming the first cell that fails."""
    from mmrl_harness.preflight import check_train_inputs
    from mmrl_harness.train.algorithms import load_algorithm
    from mmrl_harness.train.config import train_config_from_dict

    seen: set[str] = set()
    for cell in cells:
        config = train_config_from_dict(cell.config, f"cell {cell.id}")
        setup = [config.task, config.task_overrides, config.fusion.name, config.algorithm]
        key = json.dumps(setup, sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        try:
            check_train_inputs(config)
            load_algorithm(config.algorithm).check(config)
        except MMRLError as err:
            raise SweepError(f"cell {cell.id}: {err}") from None


def run_sweep(
    sweep_file: str | Path,
    *,
    output_dir: str | Path | None = None,
    executor: str = "local",
    jobs: int = 1,
    ray_address: str | None = None,
    console: Console | None = None,
) -> SweepPlan:
    """Run every cell of the sweep not yet done; return the plan with every cell's record.

    ``executor`` is ``local`` (``jobs`` cells at once, each in a worker process when jobs > 1)
    or ``ray`` (each cell a Ray task; ``ray_address`` joins a cluster). ``<out>/sweep.json`` is
    written before the first cell and after each one.
    """
    if executor not in EXECUTORS:
        raise InputError(f"--executor: {executor!r} is not one of {', '.join(EXECUTORS)}")
    if jobs < 1:
        raise InputError(f"--jobs: {jobs} cells at once is impossible; give 1 or more")
    if executor == "ray":
        import_ray()  # missing Ray fails here, before anything is written
    plan = plan_sweep(sweep_file, output_dir)
    todo = plan.todo()
    for cell in todo:  # a cell that failed before is pending again until it finishes
        plan.records[cell.id] = base_record(cell, "pending")
    write_aggregate(plan, executor)
    progress = _progress(console, len(plan.cells), len(plan.cells) - len(todo))

    def on_done(record: dict[str, Any]) -> None:
        plan.records[record["id"]] = record
        write_aggregate(plan, executor)
        if progress is not None:
            progress.advance(progress.task_ids[0])

    try:
        if executor == "ray":
            run_ray(todo, plan.spec.resources, ray_address, on_done)
        else:
            run_local(todo, plan.spec.resources, jobs, on_done)
    finally:
        if progress is not None:
            progress.stop()
    return plan


def write_aggregate(plan: SweepPlan, executor: str) -> Path:
    """Write ``<out>/sweep.json`` (atomically): counts and every cell's record, in plan order."""
    records = [plan.records[c.id] for c in plan.cells]
    counts = {s: sum(r["status"] == s for r in records) for s in ("done", "failed", "pending")}
    path = plan.output_dir / SWEEP_FILE
    write_json_atomic(
        path,
        {
            "format": SWEEP_FORMAT,
            "sweep_file": str(plan.source.resolve()),
            "output_dir": str(plan.output_dir),
            "executor": executor,
            "resources": plan.spec.resources.model_dump(mode="json"),
            "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "counts": counts,
            "cells": records,
        },
    )
    return path


def _previous_records(path: Path) -> dict[str, dict[str, Any]]:
    """The records of an earlier ``sweep.json`` by id; nothing when absent or unreadable (the
    results files, not this file, decide what is done)."""
    try:
        data = json.loads(path.read_text())
        return {r["id"]: r for r in data["cells"] if isinstance(r, dict) and "id" in r}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _progress(console: Console | None, total: int, done: int) -> Any:
    if console is None:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    progress.add_task("sweep cells", total=total, completed=done)
    progress.start()
    return progress


def plan_table(plan: SweepPlan) -> Table:
    """One row per cell: id, factors, and whether it is done or still to run."""
    from rich.table import Table

    table = Table(title=f"sweep {plan.source} -> {plan.output_dir}", title_justify="left")
    table.add_column("cell", overflow="fold", min_width=16)  # ids are long; fold, not crop
    for column in ("model", "fusion", "task", "algorithm", "seed", "status"):
        table.add_column(column, overflow="fold")
    for cell in plan.cells:
        f = cell.factors
        fusion = f["fusion"] + (f" {_inline(f['fusion_options'])}" if f["fusion_options"] else "")
        task = f["task"] + (f" {_inline(f['task_overrides'])}" if f["task_overrides"] else "")
        status = plan.records[cell.id]["status"]
        table.add_row(
            cell.id, f["model"], fusion, task, f["algorithm"], str(f["seed"]),
            "done" if status == "done" else "to run",
        )  # fmt: skip
    return table


def outcome_table(plan: SweepPlan) -> Table:
    """One row per cell after a run: id, status, success rate (or the error), wall and CPU
    seconds."""
    from rich.table import Table

    table = Table(title=f"sweep results in {plan.output_dir / SWEEP_FILE}", title_justify="left")
    table.add_column("cell", overflow="fold", min_width=16)  # ids are long; fold, not crop
    for column in ("status", "success", "wall s", "CPU s"):
        table.add_column(column)
    for cell in plan.cells:
        record = plan.records[cell.id]
        times = [record.get("wall_time_s"), record.get("cpu_time_s")]
        if record["status"] == "failed":
            detail = f"[red]{record['error']['type'].rsplit('.', 1)[-1]}[/]"
        else:
            tasks = (record.get("summary") or {}).get("tasks", {})
            rates = [t.get("success_rate") for t in tasks.values()]
            detail = ", ".join(f"{r:.3f}" for r in rates if r is not None) or "–"
        shown = ["–" if t is None else f"{t:.0f}" for t in times]
        table.add_row(cell.id, record["status"], detail, *shown)
    return table


def _inline(mapping: dict[str, Any]) -> str:
    """``{"env_kwargs.image_size": 32}`` -> ``image_size=32`` (compact, for a table cell)."""
    from rich.markup import escape  # a value like [red, blue] is data, not a style

    return " ".join(
        escape(f"{key.removeprefix('env_kwargs.')}={json.dumps(value, default=str)}")
        for key, value in mapping.items()
    )
