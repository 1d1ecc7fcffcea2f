"""The episodic training loop, shared by every ``EpisodicAlgorithm`` (``ppo``, ``episodic_grpo``).

TRL has no PPO since 1.13 and its multi-turn ``rollout_func`` re-encodes only a dataset's
images, so this loop is the harness's own, on Accelerate and PEFT. It reads like CleanRL's
``ppo.py``; each update is five named steps:

1. ``collect_rollouts`` — every process steps ``per_device_batch_size`` environments with one
   batched forward per turn (the algorithm's rollout scheme), keeping each turn's own frame;
2. ``algorithm.compute_advantages`` — GAE, group-relative, ...;
3. ``optimize`` — ``ppo_epochs`` passes of ``num_minibatches`` minibatches re-score those very
   (frame, prompt, answer) turns and step Adam on the clipped objective - entropy bonus
   (+ the algorithm's loss terms, + KL to the LoRA-disabled reference when ``kl_coef > 0``);
4. ``log_step`` — metrics gathered across processes, greedy evaluation every ``eval_every``;
5. ``save_step`` — a checkpoint every ``save_steps``, on a new best, and at the end; the
   episodes in progress end there (bootstrapped), so a resumed run replays exactly.

Dropout stays off (the model is kept in eval mode): with it, the importance ratio of a turn
would be noise even before the weights move.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mmrl_harness.metrics.cost import peak_memory_mib
from mmrl_harness.train.checkpoints import (
    check_resume_config,
    fault_point,
    last_checkpoint,
    refuse_existing_checkpoints,
    resume_checkpoint,
)
from mmrl_harness.train.episodic.checkpoint import (
    BEST_DIR,
    STATE_FILE,
    CheckpointError,
    copy_as_best,
    keep_trainable_only,
    load_checkpoint,
    save_checkpoint,
)
from mmrl_harness.train.episodic.config import EpisodicConfig
from mmrl_harness.train.episodic.metrics import (
    greedy_success_rate,
    log_update,
    reduce_sum,
    trim_metrics,
    update_metrics,
)
from mmrl_harness.train.episodic.policy import (
    ActorCritic,
    PolicySpec,
    ValueHead,
    hidden_size,
    policy_spec,
)
from mmrl_harness.train.episodic.rollout import EnvPool, EpisodeError, Rollout
from mmrl_harness.train.episodic.update import optimize
from mmrl_harness.train.lock import output_dir_lock
from mmrl_harness.train.manifest import CheckpointManifest, manifest_template
from mmrl_harness.train.result import TrainResult

if TYPE_CHECKING:
    from accelerate import Accelerator

    from mmrl_harness.models.loading import LoadedVLM
    from mmrl_harness.tasks.schema import TaskDefinition
    from mmrl_harness.train.config import TrainConfig
    from mmrl_harness.train.episodic.algorithm import EpisodicAlgorithm
    from mmrl_harness.train.policy import PolicyModel


@dataclass
class EpisodicTrainResult(TrainResult):
    """``TrainResult`` plus the greedy evaluations made while training and the best of them.

    Attributes:
        evaluations: ``{step, wall_time_s, success_rate}`` per evaluation, in order.
        best_checkpoint: ``output_dir/best`` (a copy of the best-evaluating checkpoint).
        best_success_rate: its greedy success rate.
    """

    evaluations: list[dict[str, float]] = field(default_factory=list)
    best_checkpoint: Path | None = None
    best_success_rate: float | None = None


def make_accelerator(config: TrainConfig) -> Accelerator:
    """An ``Accelerator`` for the run: CPU when asked (or without CUDA), trackers from report_to."""
    from accelerate import Accelerator

    report = config.report_to
    log_with = None if report in ("none", [], ["none"]) else report
    accelerator = Accelerator(cpu=bool(config.use_cpu), log_with=log_with)
    if log_with is not None:
        accelerator.init_trackers("mmrl", config=config.model_dump(mode="json"))
    return accelerator


@dataclass
class EpisodicRun:
    """Everything one episodic run holds between updates (what CleanRL keeps in globals)."""

    config: TrainConfig
    opts: EpisodicConfig
    algorithm: EpisodicAlgorithm
    accelerator: Accelerator
    policy: PolicyModel
    model: torch.nn.Module  # the prepared ActorCritic
    optimizer: torch.optim.Optimizer
    params: list[torch.nn.Parameter]
    loaded: LoadedVLM
    task: TaskDefinition
    pool: EnvPool
    spec: PolicySpec
    out: EpisodicTrainResult
    manifest: CheckpointManifest | None = None  # the main process's template for checkpoints
    base_lrs: list[float] = field(default_factory=list)  # each param group's initial lr
    best: float | None = None
    elapsed: float = 0.0  # wall seconds of the earlier sessions of a resumed run
    started: float = 0.0  # perf_counter of the run's start, earlier sessions included


def train_episodic(
    config: TrainConfig,
    policy: PolicyModel,
    accelerator: Accelerator | None = None,
    *,
    algorithm: EpisodicAlgorithm | None = None,
) -> EpisodicTrainResult:
    """Train ``policy`` on ``config.task`` with ``algorithm`` (default: ``config.algorithm``).

    Resumes from the last intact checkpoint in ``output_dir`` when ``config.resume``; holds
    ``output_dir``'s lock throughout. Without an ``accelerator`` one is made from the config
    (``make_accelerator``).
    """
    algorithm = algorithm if algorithm is not None else _episodic_algorithm(config.algorithm)
    algorithm.check(config)
    with output_dir_lock(config.output_dir):
        run = setup(config, policy, algorithm, accelerator)
        resume(run)
        return _train_loop(run)


def _train_loop(run: EpisodicRun) -> EpisodicTrainResult:
    """Updates from the one after ``run.out.global_step`` to ``max_steps`` (or a stop)."""
    config, algorithm = run.config, run.algorithm
    session_start = time.perf_counter()
    run.started = session_start - run.elapsed  # the run's clock continues across resumes
    try:
        for update in range(run.out.global_step + 1, config.max_steps + 1):
            step_start, step_cpu = time.perf_counter(), time.process_time()
            set_learning_rates(run.optimizer, run.base_lrs, update, config.max_steps, run.opts)
            seeds, generator = update_rngs(run, update)
            rollout = collect_rollouts(run, update, seeds, generator)
            rollout_time = time.perf_counter() - step_start
            algorithm.compute_advantages(rollout, config, run.opts)
            stats = optimize(
                run.accelerator,
                run.model,
                run.optimizer,
                run.params,
                run.loaded,
                run.spec,
                rollout,
                run.opts,
                algorithm,
            )
            metrics = step_metrics(run, rollout, stats, update, step_start, step_cpu, rollout_time)
            success, improved = log_step(run, update, metrics)
            fault_point("after-update", update)
            stop = success is not None and success >= (run.opts.stop_at_success or 2.0)
            save_step(run, update, improved=improved, stop=stop)
            if stop:
                break
    finally:
        run.pool.close()
    load_best(run)
    run.out.train_seconds = time.perf_counter() - session_start
    return run.out


def _episodic_algorithm(name: str) -> EpisodicAlgorithm:
    from mmrl_harness.train.algorithms import load_algorithm

    algorithm = load_algorithm(name)
    # Every EpisodicAlgorithm keeps its options in episodic: (the class itself is not imported
    # here: it imports this module to train).
    if algorithm.options_field != "episodic":
        raise ValueError(
            f"train_episodic runs episodic algorithms (ppo, episodic_grpo, ...), not {name!r}; "
            "use mmrl_harness.train.train(config) to dispatch"
        )
    return algorithm  # type: ignore[return-value]


def make_optimizer(
    actor_critic: ActorCritic, learning_rate: float, value_learning_rate: float | None
) -> torch.optim.Adam:
    """Adam over the trainable parameters; the value head in its own group when it has its own lr.

    eps 1e-5 as in the PPO implementations this follows (CleanRL, SB3).
    """
    params = [p for p in actor_critic.parameters() if p.requires_grad]
    if value_learning_rate is None:
        return torch.optim.Adam(params, lr=learning_rate, eps=1e-5)
    value = {id(p) for p in actor_critic.value_head.parameters()}
    groups: list[dict[str, Any]] = [
        {"params": [p for p in params if id(p) not in value]},
        {"params": [p for p in params if id(p) in value], "lr": value_learning_rate},
    ]
    return torch.optim.Adam(groups, lr=learning_rate, eps=1e-5)


def scheduled_lr(base_lr: float, update: int, max_steps: int, anneal: bool) -> float:
    """The learning rate of update ``update`` (1-based) for a group whose initial lr is ``base_lr``.

    Constant without ``anneal``; with it, linear from ``base_lr`` at update 1 towards 0 (the last
    update steps with ``base_lr / max_steps``), as CleanRL's ``anneal_lr``.
    """
    if not anneal:
        return base_lr
    return base_lr * (1.0 - (update - 1.0) / max_steps)


def set_learning_rates(
    optimizer: torch.optim.Optimizer,
    base_lrs: list[float],
    update: int,
    max_steps: int,
    opts: EpisodicConfig,
) -> None:
    """Set each param group's lr for ``update`` from its initial lr (``scheduled_lr``).

    Recomputed from the update index at every update rather than stepped, so a resumed run
    (whose Adam state restores the last saved lr) continues the very same schedule.
    """
    for group, base_lr in zip(optimizer.param_groups, base_lrs, strict=True):
        group["lr"] = scheduled_lr(base_lr, update, max_steps, opts.anneal_lr)


def setup(
    config: TrainConfig,
    policy: PolicyModel,
    algorithm: EpisodicAlgorithm,
    accelerator: Accelerator | None,
) -> EpisodicRun:
    """Actor-critic, Adam, the environments and the policy spec, prepared by Accelerate."""
    from mmrl_harness.evaluate import resolve_task
    from mmrl_harness.tasks.gym_task import make_task_env

    accelerator = accelerator if accelerator is not None else make_accelerator(config)
    opts = EpisodicConfig.model_validate(config.episodic)
    task = resolve_task(config.task, config.task_overrides)
    value_head = ValueHead(hidden_size(policy.peft_model), opts.value_head_width)
    actor_critic = ActorCritic(policy.peft_model, value_head).to(accelerator.device)
    params = [p for p in actor_critic.parameters() if p.requires_grad]
    optimizer = make_optimizer(actor_critic, config.learning_rate, opts.value_learning_rate)
    base_lrs = [float(group["lr"]) for group in optimizer.param_groups]
    model, optimizer = accelerator.prepare(actor_critic, optimizer)
    model.eval()
    keep_trainable_only(accelerator, model)
    loaded = policy.vlm
    pool = EnvPool([make_task_env(task) for _ in range(config.per_device_batch_size)])
    spec = policy_spec(
        loaded,
        opts.policy_mode,
        pool.envs[0].action_words,
        config.temperature,
        config.max_new_tokens,
    )
    out = EpisodicTrainResult(config.algorithm, Path(config.output_dir), 0, 0.0)
    manifest = manifest_template(config, policy) if accelerator.is_main_process else None
    return EpisodicRun(
        config,
        opts,
        algorithm,
        accelerator,
        policy,
        model,
        optimizer,
        params,
        loaded,
        task,
        pool,
        spec,
        out,
        manifest,
        base_lrs,
    )


def resume(run: EpisodicRun) -> None:
    """Continue from the last intact checkpoint in ``output_dir`` (when ``resume``): weights,
    Adam, RNG states, the update count, the best evaluation and the run's wall time so far.

    Half-written checkpoints are deleted and a corrupt one is skipped (``resume_checkpoint``); a
    checkpoint of another config is refused (``check_resume_config``); ``metrics.jsonl`` is cut
    back to the resumed update, so no update is logged twice.
    """
    config, out, accelerator = run.config, run.out, run.accelerator
    checkpoint = None
    if not config.resume:
        refuse_existing_checkpoints(config)
    else:
        checkpoint = resume_checkpoint(
            config.output_dir,
            main_process=accelerator.is_main_process,
            barrier=accelerator.wait_for_everyone,
        )
    if checkpoint is None:
        if accelerator.is_main_process:
            trim_metrics(config.output_dir, 0)  # rows of a run killed before its first save
        return
    check_resume_config(checkpoint, config)
    state = load_checkpoint(accelerator, run.model, checkpoint)
    if state.get("algorithm") != config.algorithm:
        raise CheckpointError(
            f"{checkpoint} was written by algorithm {state.get('algorithm')!r}, not "
            f"{config.algorithm!r}; pick a fresh output_dir or set resume: false"
        )
    out.global_step, run.best = state["update"], state["best_success_rate"]
    out.best_success_rate, run.elapsed = run.best, state["wall_time_s"]
    out.resumed_from = out.last_checkpoint = out.policy_checkpoint = checkpoint
    if accelerator.is_main_process:
        trim_metrics(config.output_dir, out.global_step)
    accelerator.print(f"resumed from {checkpoint} at update {out.global_step}")


def update_rngs(run: EpisodicRun, update: int) -> tuple[np.random.Generator, torch.Generator]:
    """Environment seeds and sampling noise of one update.

    Keyed by the update, not drawn from a running state: a resumed run replays the same
    environment seeds and sampling noise from its first update on.
    """
    seeds = np.random.default_rng([run.config.seed, run.accelerator.process_index, update])
    generator = torch.Generator().manual_seed(int(seeds.integers(2**31)))
    return seeds, generator


def collect_rollouts(
    run: EpisodicRun, update: int, seeds: np.random.Generator, generator: torch.Generator
) -> Rollout:
    """The algorithm's rollout; an environment error names the update and the safe checkpoint."""
    try:
        return run.algorithm.collect(
            run.pool, run.model, run.loaded, run.spec, run.config, run.opts, seeds, generator
        )
    except EpisodeError as err:
        raise EpisodeError(
            f"{err} — in the rollout of update {update}; training stopped before "
            f"changing any weight (last checkpoint: "
            f"{last_checkpoint(run.config.output_dir) or 'none'}, untouched)"
        ) from err


def step_metrics(
    run: EpisodicRun,
    rollout: Rollout,
    stats: dict[str, float],
    update: int,
    step_start: float,
    step_cpu: float,
    rollout_time: float,
) -> dict[str, float]:
    """The update's metrics over all processes, with the fusion adapter's values and timings."""
    update_tokens = stats.pop("num_tokens")
    metrics = update_metrics(run.accelerator, rollout, stats, run.algorithm.metrics(rollout))
    metrics.update(run.policy.log_values())
    step_time = time.perf_counter() - step_start
    tokens = reduce_sum(run.accelerator, rollout.tokens + update_tokens)
    metrics.update(
        step=update,
        step_time=step_time,
        # CPU seconds of this process: on a shared machine, the wall clock also counts
        # the time other processes held the cores.
        step_cpu_time=time.process_time() - step_cpu,
        rollout_time=rollout_time,
        num_tokens=tokens,
        tokens_per_s=tokens / step_time,
        learning_rate=float(run.optimizer.param_groups[0]["lr"]),
        peak_memory_mib=peak_memory_mib(),
        wall_time_s=time.perf_counter() - run.started,
    )
    return metrics


def log_step(run: EpisodicRun, update: int, metrics: dict[str, float]) -> tuple[float | None, bool]:
    """Evaluate greedily when due, then log; returns ``(success rate or None, new best)``."""
    opts, config, out = run.opts, run.config, run.out
    success, improved = None, False
    if opts.eval_every and (update % opts.eval_every == 0 or update == config.max_steps):
        eval_start = time.perf_counter()
        success = greedy_success_rate(
            run.accelerator, run.loaded, run.task, opts.policy_mode, opts.eval_episodes
        )
        metrics["eval/success_rate"] = success
        metrics["eval_time"] = time.perf_counter() - eval_start
        out.evaluations.append(
            {"step": update, "wall_time_s": metrics["wall_time_s"], "success_rate": success}
        )
        improved = run.best is None or success > run.best
        run.best = success if improved else run.best
    out.log_history.append(metrics)
    out.global_step, out.best_success_rate = update, run.best
    log_update(run.accelerator, config, metrics)
    return success, improved


def save_step(run: EpisodicRun, update: int, *, improved: bool, stop: bool) -> None:
    """Checkpoint every ``save_steps``, at the end, on a new best (copied to ``best``); then end
    the episodes in progress.

    A checkpoint cannot hold the environments (their states are not generally picklable), so
    every run — interrupted or not — starts fresh episodes after each checkpoint, seeded by the
    next update's generator: a run resumed from it replays the uninterrupted one exactly. The
    cut episodes were already bootstrapped from the value head (``next_values``), as any
    rollout's unfinished episode is.
    """
    config, out = run.config, run.out
    if not (update % config.save_steps == 0 or update == config.max_steps or improved or stop):
        return
    state = {
        "update": update,
        "algorithm": config.algorithm,
        "best_success_rate": run.best,
        "wall_time_s": time.perf_counter() - run.started,
        "episodic": run.opts.model_dump(),
    }
    out.last_checkpoint = out.policy_checkpoint = save_checkpoint(
        run.accelerator,
        config.output_dir,
        update,
        state,
        run.policy.peft_model,
        keep_last=config.save_total_limit,
        manifest=run.manifest,
    )
    run.pool.observations = [None] * len(run.pool)  # collect_steps resets them, update-seeded
    if improved and run.opts.keep_best:
        out.best_checkpoint = copy_as_best(run.accelerator, out.last_checkpoint)


def load_best(run: EpisodicRun) -> None:
    """Load ``output_dir/best`` back when ``keep_best`` (this run's best, or the resumed run's:
    never a folder left by an unrelated earlier run)."""
    out = run.out
    best_dir = Path(run.config.output_dir) / BEST_DIR
    ours = out.best_checkpoint is not None or (
        out.resumed_from is not None and run.best is not None
    )
    if run.opts.keep_best and ours and (best_dir / STATE_FILE).is_file():
        load_checkpoint(run.accelerator, run.model, best_dir)
        out.best_checkpoint = out.policy_checkpoint = best_dir
        run.accelerator.print(f"loaded the best policy (greedy success {run.best}) from {best_dir}")
