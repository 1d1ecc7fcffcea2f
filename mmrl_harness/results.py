"""The versioned results file: run config, provenance, metrics and the episode records behind them.

Every metric in a results file is computed from its episode records alone
(``mmrl_harness.metrics.compute_task_metrics``), so anyone can recompute and check a score:
``load_results`` does (``mmrl_harness.verify``). Files are written atomically (temp file +
rename): a crash never leaves half a results file. The schema itself is in ``results_schema``.
"""

from __future__ import annotations

import os
import platform
import subprocess
import uuid
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from mmrl_harness.errors import MMRLError
from mmrl_harness.results_schema import (
    SCHEMA_VERSION,
    Bootstrap,
    Cost,
    EpisodeRecord,
    EvalResults,
    FusionInfo,
    MetricValue,
    ModelInfo,
    Provenance,
    RobustnessResult,
    TaskResult,
    TrainingSummary,
    document_digest,
    json_digest,
    records_digest,
)
from mmrl_harness.verify import Problem, check_results, parse_results_file

# The schema lives in results_schema (so the metrics can import it); its names are public here.
__all__ = [
    "SCHEMA_VERSION",
    "Bootstrap",
    "Cost",
    "EpisodeRecord",
    "EvalResults",
    "FusionInfo",
    "MetricValue",
    "ModelInfo",
    "Provenance",
    "ResultsFileError",
    "ResultsVerificationError",
    "RobustnessResult",
    "TaskResult",
    "TrainingSummary",
    "document_digest",
    "git_sha",
    "hardware_info",
    "json_digest",
    "library_versions",
    "load_results",
    "now_utc",
    "records_digest",
    "records_to_dataset",
    "write_results",
]

LIBRARIES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "gymnasium", "numpy")


class ResultsFileError(MMRLError, ValueError):
    """A results file is missing, malformed, of an unknown schema version, or tampered with."""


class ResultsVerificationError(ResultsFileError):
    """A results file that parses but does not verify; ``problems`` lists what is wrong."""

    def __init__(self, path: Path, problems: list[Problem]) -> None:
        self.path, self.problems = path, problems
        listing = "\n".join(f"  {p}" for p in problems)
        super().__init__(
            f"results file {path} does not verify ({len(problems)} problem(s)):\n{listing}\n"
            "re-run the evaluation for trustworthy numbers, or pass verify=False to read it anyway"
        )


def write_results(results: EvalResults, path: str | os.PathLike[str]) -> Path:
    """Write a results file atomically, stamping its digests; returns the path.

    The file gets mode ``0o666 & ~umask`` (0644 under the usual umask) like any file the user
    writes: the temporary file is created with ``os.open(..., 0o666)`` so the kernel applies the
    umask (``tempfile.mkstemp`` would force 0600), then renamed over ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    results.records_sha256 = records_digest(results.tasks)
    results.document_sha256 = document_digest(results)
    text = results.model_dump_json(indent=2)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_results(path: str | os.PathLike[str], *, verify: bool = True) -> EvalResults:
    """Read and validate a results file; with ``verify``, also refuse one that does not verify.

    Verification (``mmrl_harness.verify.check_results``) recomputes every metric from the records
    and checks counts and hashes; ``ResultsVerificationError.problems`` lists what failed.
    """
    path = Path(path)
    results, problems = parse_results_file(path)
    if results is None:
        listing = "; ".join(str(p) for p in problems)
        raise ResultsFileError(f"results file {path} cannot be read: {listing}")
    if verify:
        problems = check_results(results)
        if problems:
            raise ResultsVerificationError(path, problems)
    return results


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that change numbers."""
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_sha() -> str | None:
    """The harness checkout's commit (with ``-dirty`` if modified), or None when not a checkout."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def hardware_info() -> dict[str, str]:
    """Platform, CPU, accelerator and thread count (torch is imported: only call during runs)."""
    import torch

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
    }
    if torch.cuda.is_available():
        info["accelerator"] = torch.cuda.get_device_name(0)
        info["accelerator_count"] = str(torch.cuda.device_count())
    else:
        info["accelerator"] = "none"
    return info


def now_utc() -> str:
    """The current UTC time, ISO-8601."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def records_to_dataset(records: list[EpisodeRecord]) -> Any:
    """Episode records as a ``datasets.Dataset`` (``.to_parquet(path)`` to share)."""
    import datasets

    rows = [r.model_dump(mode="json") for r in records]
    return datasets.Dataset.from_list(rows)
