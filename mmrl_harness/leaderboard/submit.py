"""``mmrl submit``: check results files against a board and store the ones that pass.

Every check runs before anything is written, and a refusal writes nothing:

1. size: the file is read with a bounded read and refused past the board's ``max_file_bytes``,
   before any parsing;
2. everything ``mmrl verify`` checks: JSON, schema version (also one the board accepts), the
   schema, counts, every metric recomputed from the records, both hashes;
3. the board's tasks, exactly, each on exactly the board's evaluation seeds (and the pinned
   task definition hash, when the board gives one);
4. the board's required provenance fields, present and non-empty;
5. no duplicate (same model fingerprint + adapter + config hash) of a stored run or of another
   file in the same call;
6. the entry (runs of one model + adapter + recipe) then has at least ``min_training_seeds``
   runs with distinct training seeds.

The stored copy is sanitised (``sanitize``), named by the sha256 of its bytes, written through
a temporary file and ``os.replace`` inside the board's ``submissions/`` folder (resolved and
checked to lie inside the board folder). Nothing a submission names is imported or executed:
the checks read the file's data only.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from mmrl_harness.leaderboard.board import Board, LeaderboardError
from mmrl_harness.leaderboard.entries import Run, duplicate_key, entry_key, training_seed
from mmrl_harness.leaderboard.sanitize import sanitized_copy
from mmrl_harness.results_schema import EvalResults
from mmrl_harness.verify import FILE, Problem, check_results, check_schema_version


class SubmissionRefused(LeaderboardError):
    """A results file fails a board's checks; ``problems`` name each field and reason."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source, self.problems = source, problems
        listing = "\n".join(f"  {p}" for p in problems)
        super().__init__(
            f"{source} refused ({len(problems)} problem(s)); nothing was written:\n{listing}"
        )

    @property
    def fields(self) -> list[str]:
        """The offending field paths."""
        return [p.field for p in self.problems]


@dataclass(frozen=True)
class Accepted:
    """One stored run: where it came from, where it is, its entry."""

    source: Path
    stored: Path
    entry: str
    original_document_sha256: str | None
    stored_document_sha256: str | None


def submit(
    paths: list[str | os.PathLike[str]], board: str, boards_dir: str | Path = "leaderboards"
) -> list[Accepted]:
    """Check every file in ``paths`` against the board, then store them all (or none)."""
    target = Board(board, boards_dir)
    stored = _stored_runs(target)
    checked: list[tuple[Path, EvalResults, EvalResults]] = []
    for raw_path in paths:
        path = Path(raw_path)
        original = read_checked(path, target)
        clean = sanitized_copy(original)
        _refuse_duplicates(path, clean, stored + [Run(p, c) for p, _, c in checked])
        checked.append((path, original, clean))
    _check_training_seeds(target, stored, checked)
    return _write_all(target, checked)


def read_checked(path: Path, board: Board) -> EvalResults:
    """The validated, verified results in ``path``, meeting the board's requirements."""
    spec = board.spec
    results = _parse(path, spec.max_file_bytes, spec.schema_versions)
    problems = check_results(results)
    if problems:
        raise SubmissionRefused(str(path), problems)
    problems = _check_tasks(results, board) + _check_provenance(results, board)
    if problems:
        raise SubmissionRefused(str(path), problems)
    return results


def _parse(path: Path, limit: int, versions: list[str]) -> EvalResults:
    """Bounded read, JSON, schema version, schema: the file as ``EvalResults``."""
    try:
        with path.open("rb") as handle:  # bounded: /dev/zero or a pipe never ends
            data = handle.read(limit + 1)
    except OSError as err:
        raise SubmissionRefused(str(path), [Problem(FILE, f"cannot be read: {err}")]) from None
    if len(data) > limit:
        raise SubmissionRefused(
            str(path),
            [Problem(FILE, f"is over the board's limit of {limit} bytes (max_file_bytes)")],
        )
    try:
        raw = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        bad_json = Problem(FILE, f"is not valid JSON ({err}); it may be truncated")
        raise SubmissionRefused(str(path), [bad_json]) from None
    if not isinstance(raw, dict):
        not_object = Problem(FILE, f"holds a JSON {type(raw).__name__}, not an object")
        raise SubmissionRefused(str(path), [not_object])
    version = raw.get("schema_version")
    problem: Problem | None = check_schema_version(version)
    if problem is None and version not in versions:
        problem = Problem(
            "schema_version", f"{version!r} is not accepted by this board (accepts {versions})"
        )
    if problem is not None:
        raise SubmissionRefused(str(path), [problem])
    try:
        return EvalResults.model_validate(raw)
    except ValidationError as err:
        problems = [Problem(_field(e["loc"]), e["msg"]) for e in err.errors()]
        raise SubmissionRefused(str(path), problems) from None


def _check_tasks(results: EvalResults, board: Board) -> list[Problem]:
    wanted = board.spec.tasks
    problems = []
    if set(results.tasks) != set(wanted):
        problems.append(
            Problem(
                "tasks",
                f"has {sorted(results.tasks)}; this board requires exactly {sorted(wanted)}",
            )
        )
    for name in sorted(set(results.tasks) & set(wanted)):
        task, rule = results.tasks[name], wanted[name]
        seeds = sorted(record.seed for record in task.records)
        if seeds != rule.seed_list():
            problems.append(
                Problem(
                    f"tasks.{name}.records[].seed",
                    f"ran seeds {_short(seeds)}; this board requires exactly "
                    f"{_short(rule.seed_list())}, each once",
                )
            )
        metric = board.spec.ranking.metric
        if metric not in task.metrics:
            problems.append(
                Problem(f"tasks.{name}.metrics.{metric}", "missing; the board ranks by it")
            )
        if rule.task_hash is not None and task.task_hash != rule.task_hash:
            problems.append(
                Problem(
                    f"tasks.{name}.task_hash",
                    f"{task.task_hash[:12]}… is another variant of the task than the board's "
                    f"{rule.task_hash[:12]}… (check the task overrides)",
                )
            )
    return problems


def _check_provenance(results: EvalResults, board: Board) -> list[Problem]:
    problems = []
    provenance = results.provenance.model_dump(mode="json")
    for dotted in board.spec.required_provenance:
        node: object = provenance
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node in (None, "", [], {}):
            problems.append(
                Problem(f"provenance.{dotted}", "missing or empty; this board requires it")
            )
    return problems


def _refuse_duplicates(path: Path, results: EvalResults, runs: list[Run]) -> None:
    key = duplicate_key(results)
    for run in runs:
        if duplicate_key(run.results) == key:
            raise SubmissionRefused(
                str(path),
                [
                    Problem(
                        "provenance.model.fingerprint + provenance.fusion + config",
                        f"duplicate of {run.path.name} (same model fingerprint, adapter and "
                        "config hash); change the run (e.g. its seed) or do not resubmit it",
                    )
                ],
            )


def _check_training_seeds(
    board: Board, stored: list[Run], checked: list[tuple[Path, EvalResults, EvalResults]]
) -> None:
    minimum = board.spec.min_training_seeds
    for path, _, clean in checked:
        key = entry_key(clean)
        runs = [r.results for r in stored if entry_key(r.results) == key]
        runs += [c for _, _, c in checked if entry_key(c) == key]
        seeds = [training_seed(r) for r in runs]
        if minimum > 1 and training_seed(clean) is None:
            problem = Problem(
                "training.seed", "missing (and no config.seed); the board ranks training seeds"
            )
            raise SubmissionRefused(str(path), [problem])
        if len(set(seeds)) != len(seeds) and minimum > 1:
            problem = Problem("training.seed", f"repeated among the entry's runs: {seeds}")
            raise SubmissionRefused(str(path), [problem])
        if len(runs) < minimum:
            problem = Problem(
                "training.seed",
                f"the entry would have {len(runs)} run(s) (training seeds {seeds}); this board "
                f"requires at least {minimum} (min_training_seeds): submit them together",
            )
            raise SubmissionRefused(str(path), [problem])


def _stored_runs(board: Board) -> list[Run]:
    out = []
    for path in board.stored_files():
        try:
            out.append(Run(path, EvalResults.model_validate_json(path.read_bytes())))
        except (OSError, ValidationError) as err:
            raise LeaderboardError(
                f"stored submission {path} cannot be read ({err}); restore it from version "
                "control or remove it"
            ) from None
    return out


def _write_all(
    board: Board, checked: list[tuple[Path, EvalResults, EvalResults]]
) -> list[Accepted]:
    folder = board.inside(board.submissions)
    written: list[Accepted] = []
    try:
        for source, original, clean in checked:
            data = clean.model_dump_json(indent=2).encode()
            target = board.inside(folder / f"{hashlib.sha256(data).hexdigest()}.json")
            _atomic_write(target, data)
            written.append(
                Accepted(
                    source,
                    target,
                    entry_key(clean),
                    original.document_sha256,
                    clean.document_sha256,
                )
            )
    except BaseException:
        for done in written:  # all or nothing
            done.stored.unlink(missing_ok=True)
        raise
    return written


def _atomic_write(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the board is meant to be published
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _short(seeds: list[int]) -> str:
    return str(seeds) if len(seeds) <= 8 else f"[{seeds[0]}, …, {seeds[-1]}] ({len(seeds)} seeds)"


def _field(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as a field path: ``tasks.t.records[3].seed``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or FILE
