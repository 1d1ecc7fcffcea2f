"""RL fine-tuning: ``train(config)`` builds the policy, runs the algorithm, evaluates the result.

The algorithm comes from the ``mmrl_harness.algorithms`` registry (``train/algorithms/``):

- ``grpo``: TRL's ``GRPOTrainer`` on single-turn tasks (``algorithms/grpo.py``);
- ``ppo`` / ``episodic_grpo``: the harness's episodic loop on multi-turn tasks
  (``train/episodic/``), in which every turn's forward pass sees the frame acted on.

All start from ``build_policy`` (VLM + fusion adapter + LoRA, ``train/policy.py``) and return a
``TrainResult``; runs launch the same way alone or under ``accelerate launch``. Importing this
package is cheap (no torch): the API below loads on first use.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from mmrl_harness.results import EvalResults
    from mmrl_harness.train.algorithms import Algorithm
    from mmrl_harness.train.config import TrainConfig
    from mmrl_harness.train.policy import PolicyModel
    from mmrl_harness.train.result import TrainResult

from mmrl_harness.train.distributed import is_main_process, rank, world_size

#: Written into ``output_dir`` by ``train``.
RESULTS_FILE = "results.json"
RESULTS_BEFORE_FILE = "results_before.json"

_LAZY = {
    "TrainConfig": "mmrl_harness.train.config",
    "TrainConfigError": "mmrl_harness.train.config",
    "load_train_config": "mmrl_harness.train.config",
    "train_config_from_dict": "mmrl_harness.train.config",
    "PolicyModel": "mmrl_harness.train.policy",
    "build_policy": "mmrl_harness.train.policy",
    "TrainResult": "mmrl_harness.train.result",
    "TrainingError": "mmrl_harness.train.result",
    "Algorithm": "mmrl_harness.train.algorithms",
    "load_algorithm": "mmrl_harness.train.algorithms",
    "RewardError": "mmrl_harness.train.algorithms.grpo_trainer",
    "train_grpo": "mmrl_harness.train.algorithms.grpo_trainer",
    "train_episodic": "mmrl_harness.train.episodic.trainer",
}

__all__ = [
    "RESULTS_BEFORE_FILE",
    "RESULTS_FILE",
    "Algorithm",
    "PolicyModel",
    "RewardError",
    "TrainConfig",
    "TrainConfigError",
    "TrainResult",
    "TrainingError",
    "build_policy",
    "evaluate_policy",
    "is_main_process",
    "load_algorithm",
    "load_train_config",
    "train",
    "train_config_from_dict",
    "train_episodic",
    "train_grpo",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mmrl_harness.train' has no attribute {name!r}")


def train(config: TrainConfig, *, console: Console | None = None) -> TrainResult:
    """Fine-tune as ``config`` says, then evaluate the final policy into ``output_dir/results.json``.

    Under ``accelerate launch`` every process trains; only the main process evaluates and writes
    results (the others return a ``TrainResult`` without them).
    """
    from mmrl_harness.preflight import check_train_inputs
    from mmrl_harness.train.algorithms import load_algorithm
    from mmrl_harness.train.lock import output_dir_lock

    check_train_inputs(config)  # adapter, task, env id and action map, before the model loads
    algorithm = load_algorithm(config.algorithm)
    algorithm.check(config)  # a wrong task kind or batch size fails before the model is built
    # A second run into the same output_dir fails here, before loading any model.
    with output_dir_lock(config.output_dir):
        return _train(config, algorithm, console)


def _train(config: TrainConfig, algorithm: Algorithm, console: Console | None) -> TrainResult:
    from mmrl_harness.train.policy import build_policy

    policy = build_policy(config)
    main = is_main_process()
    output_dir = Path(config.output_dir)
    before = None
    if main and config.eval.enabled and config.eval.before:
        before = evaluate_policy(config, policy, output_dir / RESULTS_BEFORE_FILE, console=console)
    from mmrl_harness.train.summary import cost_record

    cpu_started = time.process_time()
    result = algorithm.train(config, policy, console=console)
    result.train_cpu_seconds = time.process_time() - cpu_started
    result.policy = policy
    result.results_before = before
    result.rank, result.world_size = rank(), world_size()
    result.write_rank_summary(cost_record(config, policy, result))
    if main and config.eval.enabled:
        result.results_path = output_dir / RESULTS_FILE
        # Label the evaluation with the weights actually in memory (the best checkpoint when the
        # trainer loaded it back), not merely the newest one.
        weights = result.policy_checkpoint or result.last_checkpoint
        checkpoint = str(weights) if weights else None
        result.results = evaluate_policy(
            config, policy, result.results_path, checkpoint=checkpoint, console=console
        )
    return result


def evaluate_policy(
    config: TrainConfig,
    policy: PolicyModel,
    output: str | Path | None = None,
    *,
    checkpoint: str | None = None,
    do_sample: bool | None = None,
    console: Console | None = None,
) -> EvalResults:
    """Evaluate ``policy`` on the run's task as ``config.eval`` says (sampling at the run's
    temperature when ``do_sample``); write the results file to ``output`` if given."""
    from mmrl_harness.evaluate import evaluate, resolve_task

    sample = config.eval.do_sample if do_sample is None else do_sample
    task = resolve_task(config.task, config.task_overrides)
    run_config = {"train": config.model_dump(mode="json"), "checkpoint": checkpoint}
    started = time.perf_counter()
    progress = _progress(console)
    try:
        results = evaluate(
            policy.vlm,
            [task],
            fusion=policy.fusion_info(checkpoint),
            episodes=config.eval.episodes,
            seeds=config.eval.seeds,
            policy_mode=config.eval.policy_mode,  # type: ignore[arg-type]
            do_sample=sample,
            temperature=config.temperature,
            max_new_tokens=config.max_new_tokens,
            batch_size=config.eval.batch_size,
            output=output,
            config=run_config,
            progress=progress,
        )
    finally:
        if progress is not None:
            progress.stop()
    if console is not None:
        rate = results.tasks[task.name].metrics["success_rate"].value
        mode = "sampled" if sample else "greedy"
        console.print(
            f"eval {task.name} ({mode}): success_rate {rate:.3f} "
            f"({time.perf_counter() - started:.1f} s)"
        )
    return results


def _progress(console: Console | None) -> Any:
    if console is None or not console.is_terminal:
        return None
    from rich.progress import Progress

    progress = Progress(console=console, transient=True)
    progress.start()
    return progress
