"""One sweep cell: train its config, evaluate the final checkpoint, record what happened.

``run_cell`` is what every executor runs (in this process, a worker process or a Ray task): it
takes and returns plain data (a ``Cell`` as a dict, a record as a dict) so it crosses process
and machine boundaries without surprises. Its folder ``<sweep>/cells/<id>/`` holds ``cell.json``
(the resolved cell), ``run/`` (checkpoints and logs), ``results.json`` (the evaluation) and,
when the cell failed, ``error.txt`` (the traceback).
"""

from __future__ import annotations

import json
import os
import time
import traceback
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmrl_harness.experiments.spec import Cell, SweepError

if TYPE_CHECKING:
    from mmrl_harness.train.config import TrainConfig

#: File names inside a cell folder.
CELL_FILE = "cell.json"
RESULTS_FILE = "results.json"
ERROR_FILE = "error.txt"


def cell_folder(cell: Cell) -> Path:
    """``<sweep>/cells/<id>/``: the parent of the cell's training ``output_dir``."""
    return Path(cell.config["output_dir"]).parent


def results_verify(path: Path) -> bool:
    """True when ``path`` is a results file that verifies (schema, metrics, hashes)."""
    from mmrl_harness.verify import verify_file

    return path.is_file() and not verify_file(path)


def run_cell(cell_data: dict[str, Any], threads: int) -> dict[str, Any]:
    """Train and evaluate one cell with ``threads`` torch threads; return its record.

    Never raises for a problem of the cell itself: the record then says ``failed`` with the
    error's type and message, and ``error.txt`` holds the traceback, so the sweep goes on.
    """
    cell = Cell.model_validate(cell_data)
    folder = cell_folder(cell)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / CELL_FILE, cell.model_dump(mode="json"))
    import torch

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        results = _train_and_evaluate(cell, folder)
        record = done_record(cell, results, time.perf_counter() - started)
        (folder / ERROR_FILE).unlink(missing_ok=True)
    except Exception as err:  # the record carries it; the other cells go on
        (folder / ERROR_FILE).write_text(traceback.format_exc())
        record = failed_record(cell, err, time.perf_counter() - started)
    finally:  # run in the caller's process (local, one job), leave its thread pool as it was
        torch.set_num_threads(previous_threads)
    # CPU seconds of this process (all its threads): on a shared machine, wall time measures
    # the neighbours as much as the cell.
    record["cpu_time_s"] = time.process_time() - cpu_started
    return record


def _train_and_evaluate(cell: Cell, folder: Path) -> Path:
    """``train`` (without its own evaluation), then ``run_eval`` on the last checkpoint."""
    from mmrl_harness.train import train, train_config_from_dict

    config = train_config_from_dict(cell.config, f"cell {cell.id}")
    # The cell evaluates the checkpoint on disk below (what a reader can reproduce with
    # `mmrl eval --checkpoint`), so the trainer's in-memory evaluation would only double the cost.
    config = config.model_copy(update={"eval": config.eval.model_copy(update={"enabled": False})})
    result = train(config)
    # The last checkpoint, not a kept "best" one: the trainers pick their best on the task's
    # evaluation seeds, which the cell then evaluates on, so the best would be scored on the very
    # episodes it was selected by (an optimistic, biased figure).
    weights = result.last_checkpoint or result.policy_checkpoint
    if weights is None:
        raise SweepError(
            f"cell {cell.id}: training wrote no checkpoint in {config.output_dir}; set "
            f"save_steps (now {config.save_steps}) to at most max_steps ({config.max_steps})"
        )
    del result  # free the trained model before the checkpoint loads
    return evaluate_checkpoint(config, weights, folder / RESULTS_FILE)


def evaluate_checkpoint(config: TrainConfig, weights: Path, output: Path) -> Path:
    """Evaluate the checkpoint ``weights`` of a cell's training ``config`` as the cell does
    (its task, overrides, evaluation seeds and policy settings); write ``output``."""
    from mmrl_harness.evaluate import run_eval

    run_eval(
        None,
        [config.task],
        checkpoint=str(weights),
        task_overrides=config.task_overrides,
        allow_env_imports=config.allow_env_imports,
        episodes=config.eval.episodes,
        seeds=config.eval.seeds,
        policy_mode=config.eval.policy_mode,
        do_sample=config.eval.do_sample,
        temperature=config.temperature,
        max_new_tokens=config.max_new_tokens,
        batch_size=config.eval.batch_size,
        output=output,
    )
    return output


def base_record(cell: Cell, status: str) -> dict[str, Any]:
    """The record of ``cell`` with ``status`` and nothing measured yet."""
    return {
        "id": cell.id,
        "factors": cell.factors,
        "config_hash": cell.config_hash,
        "status": status,
        "results": None,
        "error": None,
        "wall_time_s": None,
        "cpu_time_s": None,
        "finished_at": None,
        "summary": None,
    }


def done_record(
    cell: Cell, results: Path, wall_time_s: float | None, finished_at: str | None = None
) -> dict[str, Any]:
    """The record of a cell whose results file ``results`` exists (and verifies), finished at
    ``finished_at`` (default: now)."""
    record = base_record(cell, "done")
    record["results"] = f"cells/{cell.id}/{results.name}"
    record["wall_time_s"] = wall_time_s
    record["finished_at"] = finished_at or _now()
    record["summary"] = summarize(results)
    return record


def failed_record(cell: Cell, err: BaseException, wall_time_s: float | None) -> dict[str, Any]:
    """The record of a cell that raised ``err``."""
    record = base_record(cell, "failed")
    kind = type(err)
    record["error"] = {"type": f"{kind.__module__}.{kind.__qualname__}", "message": str(err)}
    record["wall_time_s"] = wall_time_s
    record["finished_at"] = _now()
    return record


def summarize(path: Path) -> dict[str, Any]:
    """Headline numbers of a results file: per task, success rate, return and length; and the
    training summary's wall time, steps and samples where the file has one (schema >= 1.2)."""
    raw = json.loads(path.read_text())
    tasks = {
        name: {
            key: (task.get("metrics", {}).get(key) or {}).get("value")
            for key in ("success_rate", "episode_return", "episode_length")
        }
        for name, task in raw.get("tasks", {}).items()
    }
    summary: dict[str, Any] = {"tasks": tasks}
    training = raw.get("training")
    if isinstance(training, dict):
        summary["training"] = {
            key: training.get(key) for key in ("wall_time_s", "steps", "samples")
        }
    return summary


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file and a rename, so a reader
    (or a killed sweep) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _now() -> str:
    from mmrl_harness.results import now_utc

    return now_utc()
