"""Per-update metrics of the episodic trainers: gathered over processes, logged, evaluated.

Metric names follow TRL's GRPO where TRL has one (``reward``, ``reward_std``, ``entropy``,
``kl``, ``clip_ratio``, ``num_tokens``, ``step_time``; ``step_cpu_time`` beside it) and BALROG's for episodes
(``episode_return``, ``episode_length``); ``fusion/*`` are the fusion adapter's coefficients.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from accelerate import Accelerator

    from mmrl_harness.models.loading import LoadedVLM
    from mmrl_harness.tasks.schema import TaskDefinition
    from mmrl_harness.train.config import TrainConfig
    from mmrl_harness.train.episodic.rollout import Rollout

METRICS_FILE = "metrics.jsonl"

#: Shown on the console line of a logged update, in this order.
_SHOWN = ("eval/success_rate", "success_rate", "episode_return", "entropy", "kl", "step_time")


def reduce_sum(accelerator: Accelerator, value: float) -> float:
    """``value`` summed over processes."""
    tensor = torch.tensor([value], dtype=torch.float64, device=accelerator.device)
    return float(accelerator.reduce(tensor, reduction="sum")[0])


def update_metrics(
    accelerator: Accelerator,
    rollout: Rollout,
    stats: dict[str, float],
    extra: dict[str, float],
) -> dict[str, float]:
    """Rollout and update statistics over all processes.

    Rewards and episodes are pooled (each process contributes a sum and a count, so unequal
    episode counts weigh correctly); update statistics and the algorithm's ``extra`` metrics
    are averaged over processes.
    """
    episodes = rollout.episodes
    rewards = rollout.rewards.double()
    parts: dict[str, tuple[float, float]] = {
        "reward": (float(rewards.sum()), len(rewards)),
        "_reward_sq": (float((rewards**2).sum()), len(rewards)),
        "episode_return": (sum(e.episode_return for e in episodes), len(episodes)),
        "episode_length": (float(sum(e.length for e in episodes)), len(episodes)),
        "success_rate": (float(sum(e.success for e in episodes)), len(episodes)),
        **{k: (v, 1) for k, v in stats.items()},
        **{k: (v, 1) for k, v in extra.items()},
    }
    names = list(parts)
    local = torch.tensor([parts[n] for n in names], dtype=torch.float64, device=accelerator.device)
    total = accelerator.reduce(local, reduction="sum").cpu().tolist()
    out = {n: s / c if c else float("nan") for n, (s, c) in zip(names, total, strict=True)}
    out["reward_std"] = float(np.sqrt(max(out.pop("_reward_sq") - out["reward"] ** 2, 0.0)))
    out["episodes"] = float(total[names.index("episode_return")][1])
    return out


def greedy_success_rate(
    accelerator: Accelerator, loaded: LoadedVLM, task: TaskDefinition, mode: str, episodes: int
) -> float:
    """Greedy success rate on the task's first evaluation seeds (main process; broadcast).

    Uses the evaluator's own ``run_episodes`` and ``VLMPolicy``, so the number is the one a
    later ``mmrl eval`` of the same weights reports.
    """
    from accelerate.utils import broadcast_object_list

    from mmrl_harness.rollout import VLMPolicy, run_episodes
    from mmrl_harness.tasks.gym_task import make_task_env

    value: list[Any] = [None]
    if accelerator.is_main_process:
        with torch.no_grad():
            records = run_episodes(
                lambda: make_task_env(task),
                VLMPolicy(loaded, mode=mode),  # type: ignore[arg-type]
                task.eval_seeds.seeds()[:episodes],
                batch_size=episodes,
            )
        value[0] = sum(r.success for r in records) / len(records)
    if accelerator.num_processes > 1:
        broadcast_object_list(value)
    return float(value[0])


def log_update(accelerator: Accelerator, config: TrainConfig, metrics: dict[str, float]) -> None:
    """To the trackers (``report_to``), ``output_dir/metrics.jsonl`` and, every
    ``logging_steps``, one console line."""
    step = int(metrics["step"])
    if accelerator.trackers:
        accelerator.log(metrics, step=step)
    if not accelerator.is_main_process:
        return
    root = Path(config.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    with (root / METRICS_FILE).open("a") as stream:
        stream.write(json.dumps(metrics) + "\n")
    if step % config.logging_steps == 0 or step == config.max_steps:
        shown = [f"update {step}/{config.max_steps}"]
        shown += [f"{k} {metrics[k]:.3g}" for k in _SHOWN if k in metrics]
        accelerator.print(" | ".join(shown))


def trim_metrics(output_dir: str | Path, last_step: int) -> int:
    """Keep only the rows of ``output_dir/metrics.jsonl`` up to ``last_step`` (a resumed run
    logs the later updates again); a line cut short by a kill is dropped. Returns rows kept."""
    path = Path(output_dir) / METRICS_FILE
    if not path.is_file():
        return 0
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and int(row.get("step", 0)) <= last_step:
            kept.append(line + "\n")
    tmp = path.with_name(f".{METRICS_FILE}.tmp")
    tmp.write_text("".join(kept), encoding="utf-8")
    tmp.replace(path)
    return len(kept)
