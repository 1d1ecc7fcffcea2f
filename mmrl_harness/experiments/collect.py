"""Find results files, read them, and group them into runs of one configuration.

A *configuration* is (model, fusion adapter + a hash of its options, training algorithm); its
*runs* are its training seeds (``training.seed`` of a results file, schema 1.2), or one run per
file for files without a training summary (plain evaluations). Fields added by schema 1.2 are
read with ``getattr`` so 1.0/1.1 files (and this module, before 1.2) keep working.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmrl_harness.errors import MMRLError
from mmrl_harness.results import EvalResults, json_digest, load_results

#: The aggregate file ``mmrl sweep`` writes at the root of its output folder (not a results file).
SWEEP_FILE = "sweep.json"
#: Shown wherever a value is absent (an older results file, an untrained model).
MISSING = "–"
#: Every results file starts with its schema version (pydantic writes fields in schema order).
_SNIFF_BYTES = 256


class ReportInputError(MMRLError, ValueError):
    """A report input is missing, holds no results file, or two files claim the same run."""


@dataclass(frozen=True, order=True)
class ConfigKey:
    """What makes two runs the same configuration (everything but the training seed)."""

    model: str
    fusion: str
    options_hash: str
    algorithm: str


@dataclass(frozen=True)
class Run:
    """One results file: one training seed (or one evaluation) of one configuration."""

    path: Path
    results: EvalResults
    key: ConfigKey
    seed: int | None

    @property
    def training(self) -> Any | None:
        """The schema-1.2 training summary, or None (older file, or no training log)."""
        return getattr(self.results, "training", None)


@dataclass(frozen=True)
class FailedCell:
    """A sweep cell that recorded an error instead of a results file."""

    cell_id: str
    error: str


@dataclass
class Collection:
    """Everything the report reads: the runs, the sweep's failed cells, the files passed over."""

    runs: list[Run]
    failed_cells: list[FailedCell] = field(default_factory=list)
    inputs: list[Path] = field(default_factory=list)


def config_key(results: EvalResults) -> ConfigKey:
    """The configuration a results file belongs to."""
    training = getattr(results, "training", None)
    fusion = results.provenance.fusion
    return ConfigKey(
        model=results.provenance.model.name_or_path,
        fusion=fusion.name,
        options_hash=json_digest(fusion.options)[:8],
        algorithm=str(getattr(training, "algorithm", None) or MISSING),
    )


def is_results_file(path: Path) -> bool:
    """Whether ``path`` looks like a results file: a ``*.json`` whose first key is the schema
    version (checkpoints and sweep folders also hold configs, tokenizers and manifests)."""
    if path.suffix != ".json" or path.name == SWEEP_FILE or not path.is_file():
        return False
    with path.open("rb") as fh:
        head = fh.read(_SNIFF_BYTES)
    return head.lstrip().startswith(b"{") and b'"schema_version"' in head


def find_results_files(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Every results file named by ``inputs`` (files as given, folders searched recursively),
    sorted and without duplicates."""
    found: set[Path] = set()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found.update(p.resolve() for p in path.rglob("*.json") if is_results_file(p))
        elif path.is_file():
            found.add(path.resolve())
        else:
            raise ReportInputError(
                f"report input {str(path)!r} does not exist; pass results files (*.json) or "
                "folders that contain them (e.g. a sweep's output folder)."
            )
    if not found:
        raise ReportInputError(
            f"no results file found in {', '.join(map(str, inputs))}; a results file is what "
            "`mmrl eval -o FILE.json` writes."
        )
    return sorted(found)


def load_runs(paths: Iterable[Path], *, verify: bool = True) -> list[Run]:
    """Read (and by default verify) each results file as a run; two files of one configuration
    with the same training seed are refused, since they would count one run twice."""
    runs: list[Run] = []
    seen: dict[tuple[ConfigKey, int], Path] = {}
    for path in paths:
        results = load_results(path, verify=verify)
        key = config_key(results)
        seed = getattr(getattr(results, "training", None), "seed", None)
        if seed is not None:
            if (key, seed) in seen:
                raise ReportInputError(
                    f"{path} and {seen[key, seed]} are both training seed {seed} of "
                    f"{key.fusion} on {key.model} ({key.algorithm}); pass only one of them."
                )
            seen[key, seed] = path
        runs.append(Run(path=path, results=results, key=key, seed=seed))
    return runs


def _error_text(error: Any) -> str:
    """A sweep record's error: ``{type, message}`` (``mmrl sweep``'s form) or plain text."""
    if isinstance(error, dict):
        kind, message = error.get("type"), error.get("message")
        return ": ".join(str(part) for part in (kind, message) if part) or MISSING
    return str(error) if error else MISSING


def failed_sweep_cells(inputs: Sequence[str | os.PathLike[str]]) -> list[FailedCell]:
    """Cells recorded as failed in the ``sweep.json`` of any input folder (none without one).

    Reads only what the aggregate of ``mmrl sweep`` holds about each cell: ``cells``, a list of
    records with an ``id``, a ``status`` (``done``, ``failed`` or ``pending``) and an ``error``.
    """
    failed: list[FailedCell] = []
    for item in inputs:
        sweep_file = Path(item) / SWEEP_FILE
        if not sweep_file.is_file():
            continue
        try:
            data = json.loads(sweep_file.read_text(encoding="utf-8"))
        except ValueError as error:
            raise ReportInputError(
                f"{sweep_file} is not JSON ({error}); re-run the sweep to rewrite it."
            ) from None
        cells = data.get("cells", []) if isinstance(data, dict) else []
        for cell in cells if isinstance(cells, list) else []:
            if isinstance(cell, dict) and cell.get("status") == "failed":
                cell_id = str(cell.get("id") or cell.get("cell_id") or "?")
                failed.append(FailedCell(cell_id, _error_text(cell.get("error"))))
    return failed


def collect(inputs: Sequence[str | os.PathLike[str]], *, verify: bool = True) -> Collection:
    """Find, read and verify every results file under ``inputs``, plus failed sweep cells."""
    paths = find_results_files(inputs)
    return Collection(
        runs=load_runs(paths, verify=verify),
        failed_cells=failed_sweep_cells(inputs),
        inputs=[Path(i) for i in inputs],
    )
