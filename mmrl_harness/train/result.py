"""``TrainResult``: what a training run hands back, whichever algorithm ran it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmrl_harness.errors import MMRLError

if TYPE_CHECKING:
    from mmrl_harness.results import EvalResults
    from mmrl_harness.train.policy import PolicyModel


class TrainingError(MMRLError, RuntimeError):
    """Training stopped on a problem the user can fix (a reward, an episode, a checkpoint);
    the message names it. Trainers raise subclasses; the CLI prints them as one clear error."""


@dataclass
class TrainResult:
    """The outcome of ``train(config)``.

    Algorithms (``train_grpo``, ``train_episodic``) fill the training fields; ``train`` adds the
    evaluation fields after the run.

    Attributes:
        algorithm: the registered algorithm that trained it (``grpo``, ``ppo``, ...).
        output_dir: where checkpoints, logs and results went.
        global_step: optimizer steps done in total (a resumed run counts the earlier steps too).
        train_seconds: wall time of this process's training call (not of earlier, killed runs).
        log_history: one dict per logged step (``reward``, ``reward_std``, ``entropy``, ``kl``,
            ``step_time``, ``tokens_per_s``, ``peak_memory_mib``, ``fusion/*``, ...).
        last_checkpoint: the newest complete checkpoint folder, if any was written.
        policy_checkpoint: the checkpoint the in-memory policy equals at return (trainers that
            keep the best-evaluating checkpoint load it back; else the last one).
        resumed_from: the checkpoint this run continued from, or None.
        policy: the trained policy (in memory), for evaluation or further use.
        results: evaluation of the final policy (main process only; None when eval is off).
        results_before: evaluation of the untrained policy when ``eval.before`` is on.
        results_path: the written ``results.json``.
        rank: this process's rank (0 outside distributed runs).
        world_size: processes that trained together.
        train_cpu_seconds: CPU seconds of this process's training call (``train`` measures it).
    """

    algorithm: str
    output_dir: Path
    global_step: int
    train_seconds: float
    log_history: list[dict[str, Any]] = field(default_factory=list)
    last_checkpoint: Path | None = None
    policy_checkpoint: Path | None = None
    resumed_from: Path | None = None
    policy: PolicyModel | None = field(default=None, repr=False)
    results: EvalResults | None = field(default=None, repr=False)
    results_before: EvalResults | None = field(default=None, repr=False)
    results_path: Path | None = None
    rank: int = 0
    world_size: int = 1
    train_cpu_seconds: float | None = None

    def metric_series(self, key: str) -> list[tuple[int, float]]:
        """``(step, value)`` for every logged step that has ``key`` (e.g. ``"reward"``)."""
        return [
            (int(row.get("step", i)), float(row[key]))
            for i, row in enumerate(self.log_history)
            if row.get(key) is not None
        ]

    def write_rank_summary(self, extra: dict[str, Any] | None = None) -> Path:
        """Write ``output_dir/ranks/rank-<rank>.json`` (every process writes its own), so a
        distributed run shows which processes trained, for how many steps and how fast;
        ``extra`` adds keys (``train.summary.cost_record``)."""
        from mmrl_harness.metrics.cost import peak_memory_mib

        folder = self.output_dir / "ranks"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"rank-{self.rank}.json"
        summary = {
            "rank": self.rank,
            "world_size": self.world_size,
            "algorithm": self.algorithm,
            "global_step": self.global_step,
            "train_seconds": self.train_seconds,
            "peak_memory_mib": peak_memory_mib(),
            "resumed_from": str(self.resumed_from) if self.resumed_from else None,
            **(extra or {}),
        }
        path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        return path
