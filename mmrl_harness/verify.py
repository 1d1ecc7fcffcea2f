"""Verify a results file: schema version, counts, every metric recomputed, whole-document hash.

A results file stores its metrics beside the episode records they came from, so a reader can
recompute every number. ``verify_file`` does that and returns the problems it finds, each naming
the field (``tasks.numberline.metrics.success_rate.value``) and what is wrong with it.

Counts, integers and hashes are compared exactly; float metrics to a relative 1e-9
(``METRIC_RTOL``). The stored numbers were produced by the same functions
(``mmrl_harness.metrics``) on the same floats, and JSON round-trips a float64 exactly, but
another CPU may sum them in another order (numpy chooses SIMD kernels per machine), which moves
the last bits and nothing more. The bootstrap intervals recompute too, because their seed and
resample count are stored in the file (``bootstrap``). Any larger difference is an edit, or a
different metric implementation or numpy version, which the message then names.

The hashes prove integrity, not authorship: anyone can recompute them after an edit. Only
re-running the episodes shows that the records are what the model does.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mmrl_harness import __version__
from mmrl_harness.metrics import compute_task_metrics, length_histogram
from mmrl_harness.metrics.cost import money, tokens_per_s
from mmrl_harness.metrics.episodes import METRICS_SINCE
from mmrl_harness.metrics.robustness import PairingError, robustness_metrics
from mmrl_harness.results_schema import (
    SCHEMA_VERSION,
    EpisodeRecord,
    EvalResults,
    TaskResult,
    document_digest,
    records_digest,
)

#: Field name used for problems with the file as a whole (missing, not JSON, not an object).
FILE = "(file)"
_MAJOR, _MINOR = (int(part) for part in SCHEMA_VERSION.split("."))


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a results file: where (a field path) and what."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def verify_file(path: str | os.PathLike[str]) -> list[Problem]:
    """Every problem with the results file at ``path``; an empty list means it verifies."""
    results, problems = parse_results_file(path)
    if results is None:
        return problems
    return check_results(results)


def parse_results_file(path: str | os.PathLike[str]) -> tuple[EvalResults | None, list[Problem]]:
    """Read, check the schema version and validate; ``(None, problems)`` when that fails."""
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None, [Problem(FILE, "does not exist")]
    except (OSError, UnicodeDecodeError) as err:
        return None, [Problem(FILE, f"cannot be read: {err}")]
    except json.JSONDecodeError as err:
        return None, [Problem(FILE, f"is not valid JSON ({err}); it may be truncated")]
    if not isinstance(raw, dict):
        return None, [Problem(FILE, f"holds a JSON {type(raw).__name__}, not an object")]
    version_problem = check_schema_version(raw.get("schema_version"))
    if version_problem is not None:
        return None, [version_problem]
    try:
        return EvalResults.model_validate(raw), []
    except ValidationError as err:
        return None, [Problem(_dotted(e["loc"]), e["msg"]) for e in err.errors()]


def check_schema_version(version: Any) -> Problem | None:
    """A problem unless ``version`` is ``MAJOR.MINOR`` of this major, at most this minor."""
    try:
        major, minor = (int(part) for part in str(version).split("."))
    except ValueError:
        return Problem("schema_version", f"{version!r} is not of the form MAJOR.MINOR")
    if major != _MAJOR or minor > _MINOR:
        return Problem(
            "schema_version",
            f"{version!r} is not a version this mmrl-harness {__version__} reads "
            f"({_MAJOR}.0 to {SCHEMA_VERSION}); use the harness version that wrote the file",
        )
    return None


def check_results(results: EvalResults) -> list[Problem]:
    """Counts, metrics recomputed from the records, and hashes of a validated results file."""
    problems = [p for p in [check_schema_version(results.schema_version)] if p is not None]
    for name, task in results.tasks.items():
        problems += _check_task(name, task, results)
    problems += _check_seeds(results)
    problems += _check_cost(results)
    problems += _check_hashes(results)
    return problems


def _check_task(name: str, task: TaskResult, results: EvalResults) -> list[Problem]:
    where = f"tasks.{name}"
    problems = []
    if task.task != name:
        problems.append(Problem(f"{where}.task", f"{task.task!r} under the key {name!r}"))
    if task.num_episodes != len(task.records):
        problems.append(
            Problem(
                f"{where}.num_episodes",
                f"says {task.num_episodes} but the file holds {len(task.records)} records",
            )
        )
    problems += _check_records(f"{where}.records", name, task.records)
    problems += _check_robustness(where, task, results)
    return problems + _check_metrics(where, task, results)


def _check_records(where: str, name: str, records: list[EpisodeRecord]) -> list[Problem]:
    """Per-record consistency: task name, index, list lengths, return, invalid count."""
    problems = []
    for index, record in enumerate(records):
        at = f"{where}[{index}]"
        if record.task != name:
            problems.append(Problem(f"{at}.task", f"{record.task!r} in the records of {name!r}"))
        if record.episode_index != index:
            problems.append(
                Problem(f"{at}.episode_index", f"{record.episode_index}, expected {index}")
            )
        steps = {len(record.rewards), len(record.actions), len(record.responses)}
        if steps != {record.length}:
            problems.append(
                Problem(f"{at}.length", f"{record.length} but per-step lists of sizes {steps}")
            )
        # Same expression as the rollout (rollout._step), so the sum is bit-identical.
        if record.episode_return != float(sum(record.rewards)):
            problems.append(
                Problem(
                    f"{at}.episode_return",
                    f"{record.episode_return!r} but its rewards sum to {float(sum(record.rewards))!r}",
                )
            )
        if not 0 <= record.invalid_actions <= record.length:
            problems.append(
                Problem(
                    f"{at}.invalid_actions", f"{record.invalid_actions} of {record.length} steps"
                )
            )
    return problems


def _check_robustness(where: str, task: TaskResult, results: EvalResults) -> list[Problem]:
    """Each perturbation's records are consistent and its score and drop recompute from them."""
    problems: list[Problem] = []
    for perturbation, entry in (task.robustness or {}).items():
        at = f"{where}.robustness.{perturbation}"
        problems += _check_records(f"{at}.records", task.task, entry.records)
        try:
            score, drop = robustness_metrics(
                task.records,
                entry.records,
                seed=results.bootstrap.seed,
                resamples=results.bootstrap.resamples,
            )
        except PairingError as err:
            problems.append(Problem(f"{at}.records", str(err)))
            continue
        for label, stored, fresh in (("score", entry.score, score), ("drop", entry.drop, drop)):
            for key, value in fresh.model_dump().items():
                if not _same(getattr(stored, key), value):
                    problems.append(
                        Problem(
                            f"{at}.{label}.{key}",
                            f"stored {getattr(stored, key)!r}, recomputed from the records "
                            f"{value!r}{_origin_note(results)}",
                        )
                    )
    return problems


def _check_metrics(where: str, task: TaskResult, results: EvalResults) -> list[Problem]:
    if not task.records:
        return [Problem(f"{where}.records", "empty; metrics need at least one episode")]
    recomputed = compute_task_metrics(
        task.records,
        seed=results.bootstrap.seed,
        resamples=results.bootstrap.resamples,
        sampled=bool(results.config.get("do_sample", False)),
    )
    problems = []
    for metric in sorted(task.metrics.keys() - recomputed.keys()):
        problems.append(Problem(f"{where}.metrics.{metric}", "not a metric this harness computes"))
    for metric, fresh in recomputed.items():
        stored = task.metrics.get(metric)
        if stored is None:
            if not _older(results.schema_version, METRICS_SINCE.get(metric, "1.0")):
                problems.append(Problem(f"{where}.metrics.{metric}", "missing"))
            continue
        for key, value in fresh.model_dump().items():
            if not _same(getattr(stored, key), value):
                problems.append(
                    Problem(
                        f"{where}.metrics.{metric}.{key}",
                        f"stored {getattr(stored, key)!r}, recomputed from the records "
                        f"{value!r}{_origin_note(results)}",
                    )
                )
    histogram = length_histogram(task.records)
    if task.length_histogram != histogram:
        problems.append(
            Problem(
                f"{where}.length_histogram",
                f"stored {task.length_histogram}, recomputed from the records {histogram}",
            )
        )
    return problems


def _check_seeds(results: EvalResults) -> list[Problem]:
    # evaluate() stores each task's seeds in run order, each seed once, tasks in order.
    expected: list[int] = []
    for record in (r for task in results.tasks.values() for r in task.records):
        if record.seed not in expected:
            expected.append(record.seed)
    if results.provenance.seeds != expected:
        return [
            Problem(
                "provenance.seeds",
                f"{results.provenance.seeds} but the records ran seeds {expected}",
            )
        ]
    return []


def _check_cost(results: EvalResults) -> list[Problem]:
    cost = results.cost
    problems = []
    tokens = sum(r.tokens for t in results.tasks.values() for r in t.records)
    if cost.tokens_generated != tokens:
        problems.append(
            Problem(
                "cost.tokens_generated", f"{cost.tokens_generated} but the records sum to {tokens}"
            )
        )
    episodes = sum(len(t.records) for t in results.tasks.values())
    # Same expression as evaluate(), on the stored wall time: bit-identical.
    rate = episodes / cost.wall_time_s if cost.wall_time_s > 0 else 0.0
    if cost.episodes_per_s != rate:
        problems.append(
            Problem(
                "cost.episodes_per_s",
                f"{cost.episodes_per_s!r} but {episodes} episodes in {cost.wall_time_s!r} s "
                f"is {rate!r}",
            )
        )
    return problems + _check_new_cost(results)


def _check_new_cost(results: EvalResults) -> list[Problem]:
    """tokens_per_s and money (since 1.2), by the expressions evaluate() used."""
    cost, problems = results.cost, []
    if cost.tokens_per_s is not None:
        # Perturbed episodes ran within the same wall time, so their tokens count here.
        perturbed = sum(
            rec.tokens
            for task in results.tasks.values()
            for entry in (task.robustness or {}).values()
            for rec in entry.records
        )
        rate = tokens_per_s(cost.tokens_generated + perturbed, cost.wall_time_s)
        if cost.tokens_per_s != rate:
            problems.append(
                Problem("cost.tokens_per_s", f"{cost.tokens_per_s!r} but the run gives {rate!r}")
            )
    if (cost.money is None) != (cost.price_per_hour is None):
        problems.append(Problem("cost.money", "given without price_per_hour, or the reverse"))
    elif cost.money is not None and cost.price_per_hour is not None:
        training = results.training.wall_time_s if results.training else None
        fresh = money(cost.price_per_hour, cost.wall_time_s, training)
        if not _same(cost.money, fresh):
            problems.append(
                Problem(
                    "cost.money",
                    f"{cost.money!r} but {cost.price_per_hour!r}/h over the evaluation and "
                    f"training wall time is {fresh!r}",
                )
            )
    return problems


def _check_hashes(results: EvalResults) -> list[Problem]:
    problems = []
    if results.records_sha256 != records_digest(results.tasks):
        problems.append(
            Problem(
                "records_sha256",
                "does not match the records (the records were edited after the run)",
            )
        )
    if results.document_sha256 is None:
        # 1.0 files predate the whole-document hash; a 1.1 file without one was stripped.
        if results.schema_version != "1.0":
            problems.append(Problem("document_sha256", "missing (required since schema 1.1)"))
    elif results.document_sha256 != document_digest(results):
        problems.append(
            Problem("document_sha256", "does not match the document (it was edited after the run)")
        )
    return problems


#: Relative tolerance for recomputed float metrics. The same numbers summed in another order
#: (numpy picks its SIMD reduction kernels by CPU, so a file written on another machine may have
#: been) differ by at most n * 2**-52 relative for n terms: below 1e-10 up to a million
#: episodes. Any edit worth making (0.94 -> 1.0) is many orders of magnitude larger.
METRIC_RTOL = 1e-9


def _same(stored: Any, fresh: Any) -> bool:
    if isinstance(stored, float) and isinstance(fresh, float):
        # NaN never equals itself; two NaNs (an empty bootstrap) are the same value here.
        if math.isnan(stored) or math.isnan(fresh):
            return math.isnan(stored) and math.isnan(fresh)
        return math.isclose(stored, fresh, rel_tol=METRIC_RTOL, abs_tol=1e-12)
    return bool(stored == fresh)


def _origin_note(results: EvalResults) -> str:
    """Why an honest file might still recompute differently: other harness or numpy versions."""
    try:
        numpy_here = metadata.version("numpy")
    except metadata.PackageNotFoundError:
        numpy_here = "?"
    written = (results.provenance.harness_version, results.provenance.libraries.get("numpy"))
    if written == (__version__, numpy_here):
        return ""
    return (
        f" (written by mmrl-harness {written[0]} with numpy {written[1]}; this is "
        f"{__version__} with numpy {numpy_here})"
    )


def _older(version: str, than: str) -> bool:
    """Whether schema ``version`` predates ``than`` (both ``MAJOR.MINOR``, already checked)."""
    return tuple(map(int, version.split("."))) < tuple(map(int, than.split(".")))


def _dotted(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as a field path: ``tasks.t.records[3].seed``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or FILE
