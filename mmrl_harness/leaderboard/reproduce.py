"""``mmrl leaderboard reproduce``: re-run some of an entry's episodes and compare the records.

A digest proves a file was not edited; it cannot prove the records are what the model does.
Reproduction re-runs the first ``K`` episodes of each task of an entry's run (the same seeds,
task variant, adapter, checkpoint and policy settings) and compares each new record with the
stored one: actions, rewards, length and success must be equal. Only greedy runs can match
episode for episode (a sampled run draws from a random state the file does not hold); a sampled
run is reported as not reproducible this way.

The task variant comes from the run's config (``train.task_overrides`` for ``mmrl train``) or
else the board's ``overrides``, and must hash to the submitted ``task_hash``. Tasks are loaded
by name from the installed suite; env imports stay off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmrl_harness.leaderboard.board import Board, LeaderboardError
from mmrl_harness.leaderboard.entries import Entry, Run, group_entries
from mmrl_harness.results_schema import EpisodeRecord, EvalResults, json_digest

#: Fields of a record that a greedy re-run must reproduce exactly.
COMPARED = ("seed", "actions", "rewards", "length", "success", "invalid_actions")


@dataclass
class Reproduction:
    """The outcome for one run: verified when every re-run episode matched."""

    run: Path
    episodes: int = 0
    mismatches: list[str] = field(default_factory=list)
    skipped: str | None = None

    @property
    def verified(self) -> bool:
        """Every compared episode matched (and some were compared)."""
        return self.skipped is None and self.episodes > 0 and not self.mismatches


def find_entry(board: Board, ref: str) -> Entry:
    """The entry whose key, or one of whose stored files' digest, starts with ``ref``."""
    if not ref or not all(c in "0123456789abcdef" for c in ref):
        raise LeaderboardError(
            f"entry {ref!r} is not a hex prefix; give an entry key or a stored file's digest "
            "(see `mmrl leaderboard show`)"
        )
    runs = [Run(p, EvalResults.model_validate_json(p.read_bytes())) for p in board.stored_files()]
    matches = [
        e
        for e in group_entries(runs)
        if e.key.startswith(ref) or any(r.path.name.startswith(ref) for r in e.runs)
    ]
    if len(matches) != 1:
        raise LeaderboardError(
            f"{len(matches)} entries of board {board.name!r} match {ref!r}; give a longer prefix"
        )
    return matches[0]


def reproduce(
    name: str,
    ref: str,
    episodes: int,
    *,
    boards_dir: str | Path = "leaderboards",
    checkpoint: str | None = None,
    device: str | None = None,
) -> list[Reproduction]:
    """Re-run ``episodes`` episodes per task of each run of entry ``ref`` and compare them."""
    if episodes < 1:
        raise LeaderboardError(f"--episodes must be >= 1, got {episodes}")
    board = Board(name, boards_dir)
    entry = find_entry(board, ref)
    return [_reproduce_run(board, run, episodes, checkpoint, device) for run in entry.runs]


def _reproduce_run(
    board: Board, run: Run, episodes: int, checkpoint: str | None, device: str | None
) -> Reproduction:
    from mmrl_harness.evaluate import resolve_task, run_eval

    out = Reproduction(run.path)
    results = run.results
    settings = _policy_settings(results)
    if settings["do_sample"]:
        out.skipped = "sampled policy: episodes cannot match one for one (re-run greedy runs)"
        return out
    stored_ckpt = checkpoint or results.provenance.fusion.checkpoint
    if stored_ckpt is not None and not Path(stored_ckpt).is_dir():
        out.skipped = f"checkpoint {stored_ckpt!r} is not available here (pass --checkpoint DIR)"
        return out
    recorded = _task_overrides(results)
    variants = {}
    for task_name, task in results.tasks.items():
        overrides = recorded or board.spec.tasks[task_name].overrides
        definition = resolve_task(task_name, overrides)
        if json_digest(definition.model_dump(mode="json")) != task.task_hash:
            out.skipped = f"task {task_name!r}: cannot rebuild the submitted variant (task_hash)"
            return out
        variants[task_name] = overrides
    fusion = results.provenance.fusion
    for task_name, overrides in variants.items():
        stored = results.tasks[task_name].records[:episodes]
        fresh = run_eval(
            None if stored_ckpt else results.provenance.model.name_or_path,
            [task_name],
            task_overrides=overrides,
            fusion=None if stored_ckpt else fusion.name,
            fusion_options=None if stored_ckpt else fusion.options,
            checkpoint=stored_ckpt,
            device=device,
            seeds=[r.seed for r in stored],
            **settings,
        )
        out.episodes += len(stored)
        out.mismatches += _compare(task_name, stored, fresh.tasks[task_name].records)
    return out


def _policy_settings(results: EvalResults) -> dict[str, Any]:
    config = results.config
    train = config.get("train") if isinstance(config.get("train"), dict) else None
    if train is not None:
        evaluation = train.get("eval", {})
        return {
            "policy_mode": evaluation.get("policy_mode", "generate"),
            "do_sample": bool(evaluation.get("do_sample", False)),
            "max_new_tokens": train.get("max_new_tokens", 8),
            "batch_size": evaluation.get("batch_size", 16),
        }
    return {
        "policy_mode": config.get("policy_mode", "generate"),
        "do_sample": bool(config.get("do_sample", False)),
        "max_new_tokens": config.get("max_new_tokens", 8),
        "batch_size": config.get("batch_size", 16),
    }


def _task_overrides(results: EvalResults) -> dict[str, Any]:
    train = results.config.get("train")
    if isinstance(train, dict) and isinstance(train.get("task_overrides"), dict):
        return dict(train["task_overrides"])
    return {}


def _compare(task: str, stored: list[EpisodeRecord], fresh: list[EpisodeRecord]) -> list[str]:
    problems = []
    for index, (old, new) in enumerate(zip(stored, fresh, strict=True)):
        for name in COMPARED:
            if getattr(old, name) != getattr(new, name):
                problems.append(
                    f"{task} episode {index} (seed {old.seed}): {name} submitted "
                    f"{getattr(old, name)!r}, re-run {getattr(new, name)!r}"
                )
    return problems
