"""Where a sweep's cells run: here one after another, in worker processes, or as Ray tasks.

Every executor calls ``run_cell`` with a cell as plain data and hands each finished record to
``on_done`` as soon as it arrives (the sweep writes its aggregate file there), so a sweep that
stops half way keeps every finished cell. Ray is imported only by ``run_ray``.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Literal

from mmrl_harness.errors import MMRLError
from mmrl_harness.experiments.cell import failed_record, run_cell
from mmrl_harness.experiments.spec import Cell, Resources

#: The executors ``mmrl sweep --executor`` accepts.
EXECUTORS = ("local", "ray")
ExecutorName = Literal["local", "ray"]
OnDone = Callable[[dict[str, Any]], None]


class RayMissingError(MMRLError, ImportError):
    """The ray executor was chosen but Ray is not installed."""


def run_local(cells: Sequence[Cell], resources: Resources, jobs: int, on_done: OnDone) -> None:
    """Run ``cells`` here: one after another (``jobs`` 1), or ``jobs`` at once, each in a fresh
    worker process with ``resources.num_cpus`` torch threads."""
    if jobs <= 1:
        for cell in cells:
            on_done(run_cell(cell.model_dump(mode="json"), resources.num_cpus))
        return
    with _pool(jobs) as pool:
        futures = {
            pool.submit(run_cell, cell.model_dump(mode="json"), resources.num_cpus): cell
            for cell in cells
        }
        for future in as_completed(futures):
            try:
                record = future.result()
            except Exception as err:  # the worker process died (killed, out of memory)
                record = failed_record(futures[future], err, None)
            on_done(record)


def _pool(jobs: int) -> ProcessPoolExecutor:
    """``jobs`` worker processes, started with spawn: a forked child of a process that already
    ran torch can deadlock in its thread pools. On Python 3.11+ each worker runs one cell and
    exits, so every cell starts with clean memory (3.10 reuses workers)."""
    context = multiprocessing.get_context("spawn")
    if sys.version_info >= (3, 11):
        return ProcessPoolExecutor(jobs, mp_context=context, max_tasks_per_child=1)
    return ProcessPoolExecutor(jobs, mp_context=context)


def run_ray(
    cells: Sequence[Cell], resources: Resources, address: str | None, on_done: OnDone
) -> None:
    """Run every cell as a Ray task requesting ``resources`` (num_cpus, num_gpus).

    Uses the Ray instance this process already started if any; else joins the cluster at
    ``address`` (or ``$RAY_ADDRESS``; e.g. ``auto`` or ``ray://head:10001``); else starts a
    fresh local instance, stopped again at the end. Each task writes its cell folder itself,
    so on a cluster the sweep folder must be shared storage mounted at the same path on every
    node.
    """
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        address = address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address)
        else:  # "local": never attach silently to a cluster started earlier on this machine
            ray.init(address="local", include_dashboard=False)
    try:
        # max_retries=0: a cell that crashed its worker is recorded as failed, not rerun.
        task = ray.remote(num_cpus=resources.num_cpus, num_gpus=resources.num_gpus, max_retries=0)(
            run_cell
        )
        refs = {task.remote(c.model_dump(mode="json"), resources.num_cpus): c for c in cells}
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                try:
                    record = ray.get(ref)
                except Exception as err:  # the task's worker died (the cell itself never raises)
                    record = failed_record(refs[ref], err, None)
                on_done(record)
    finally:
        if started_here:
            ray.shutdown()


def import_ray() -> Any:
    """The ``ray`` module, or a ``RayMissingError`` saying how to install it."""
    try:
        import ray
    except ImportError as err:
        raise RayMissingError(
            f"--executor ray needs Ray, which cannot be imported ({err}); install it with "
            "`pip install 'mmrl-harness[ray]'`, or use --executor local"
        ) from None
    return ray
