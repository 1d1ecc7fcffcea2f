"""Episodic RL on multi-turn tasks: PPO with a value head and GAE, and group-relative episodes.

TRL has no PPO since 1.13 and its multi-turn ``rollout_func`` re-encodes only a dataset's
images, so this trainer is the harness's own, on Accelerate and PEFT. Each update:

1. rollout — every process steps ``per_device_batch_size`` environments with one batched
   forward per turn (``episodic_rollout``), keeping each turn's own frame;
2. update — ``ppo_epochs`` passes of ``num_minibatches`` minibatches re-score those very
   (frame, prompt, answer) turns and step Adam on the clipped objective (+ value loss for PPO,
   - entropy bonus, + KL to the LoRA-disabled reference when ``kl_coef > 0``);
3. metrics gathered across processes, greedy evaluation, checkpoint.

Dropout stays off (the model is kept in eval mode): with it, the importance ratio of a turn
would be noise even before the weights move.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from mmrl_harness.metrics.cost import peak_memory_mib
from mmrl_harness.train.checkpoints import last_checkpoint
from mmrl_harness.train.episodic_checkpoint import (
    BEST_DIR,
    STATE_FILE,
    CheckpointError,
    copy_as_best,
    keep_trainable_only,
    load_checkpoint,
    save_checkpoint,
)
from mmrl_harness.train.episodic_config import EpisodicConfig
from mmrl_harness.train.episodic_metrics import (
    greedy_success_rate,
    log_update,
    reduce_sum,
    update_metrics,
)
from mmrl_harness.train.episodic_policy import ActorCritic, ValueHead, hidden_size, policy_spec
from mmrl_harness.train.episodic_rollout import EnvPool, EpisodeError, collect_groups, collect_ppo
from mmrl_harness.train.episodic_update import optimize
from mmrl_harness.train.result import TrainResult

if TYPE_CHECKING:
    from accelerate import Accelerator

    from mmrl_harness.train.config import TrainConfig
    from mmrl_harness.train.model_setup import PolicyModel


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


def train_episodic(
    config: TrainConfig, policy: PolicyModel, accelerator: Accelerator | None = None
) -> EpisodicTrainResult:
    """Train ``policy`` on ``config.task`` with ``config.algorithm`` (ppo or episodic_grpo).

    Resumes from the last checkpoint in ``output_dir`` when ``config.resume``. Without an
    ``accelerator`` one is made from the config (``make_accelerator``).
    """
    from mmrl_harness.evaluate import resolve_task
    from mmrl_harness.tasks.gym_task import make_task_env

    if config.algorithm not in ("ppo", "episodic_grpo"):
        raise ValueError(
            f"train_episodic runs algorithm ppo or episodic_grpo, not {config.algorithm!r}; "
            "use mmrl_harness.train.train(config) to dispatch"
        )
    accelerator = accelerator if accelerator is not None else make_accelerator(config)
    opts = EpisodicConfig.model_validate(config.episodic)
    task = resolve_task(config.task, config.task_overrides)
    _check_sizes(config, opts)
    ppo = config.algorithm == "ppo"
    value_head = ValueHead(hidden_size(policy.peft_model), opts.value_head_width)
    actor_critic = ActorCritic(policy.peft_model, value_head).to(accelerator.device)
    params = [p for p in actor_critic.parameters() if p.requires_grad]
    # eps 1e-5 as in the PPO implementations this follows (CleanRL, SB3).
    optimizer = torch.optim.Adam(params, lr=config.learning_rate, eps=1e-5)
    model, optimizer = accelerator.prepare(actor_critic, optimizer)
    model.eval()
    keep_trainable_only(accelerator, model)
    loaded = policy.vlm
    pool = EnvPool([make_task_env(task) for _ in range(config.per_device_batch_size)])
    action_words = pool.envs[0].action_words
    spec = policy_spec(
        loaded, opts.policy_mode, action_words, config.temperature, config.max_new_tokens
    )
    out = EpisodicTrainResult(config.algorithm, Path(config.output_dir), 0, 0.0)
    start, best, elapsed = 0, None, 0.0
    checkpoint = last_checkpoint(config.output_dir) if config.resume else None
    if checkpoint is not None:
        state = load_checkpoint(accelerator, model, checkpoint)
        if state.get("algorithm") != config.algorithm:
            raise CheckpointError(
                f"{checkpoint} was written by algorithm {state.get('algorithm')!r}, not "
                f"{config.algorithm!r}; pick a fresh output_dir or set resume: false"
            )
        start, best, elapsed = state["update"], state["best_success_rate"], state["wall_time_s"]
        out.resumed_from = out.last_checkpoint = out.policy_checkpoint = checkpoint
        accelerator.print(f"resumed from {checkpoint} at update {start}")
    out.global_step, out.best_success_rate = start, best
    seed_pool = config.train_seeds.seeds()
    session_start = time.perf_counter()
    started = session_start - elapsed  # the run's clock continues across resumes
    try:
        for update in range(start + 1, config.max_steps + 1):
            step_start, step_cpu = time.perf_counter(), time.process_time()
            # Keyed by the update, not drawn from a running state: a resumed run replays the
            # same environment seeds and sampling noise from its first update on.
            seeds = np.random.default_rng([config.seed, accelerator.process_index, update])
            generator = torch.Generator().manual_seed(int(seeds.integers(2**31)))
            try:
                if ppo:
                    rollout = collect_ppo(
                        pool,
                        model,
                        loaded,
                        spec,
                        steps=opts.rollout_steps,
                        gamma=opts.gamma,
                        gae_lambda=opts.gae_lambda,
                        seeds=seeds,
                        seed_pool=seed_pool,
                        generator=generator,
                    )
                else:
                    rollout = collect_groups(
                        pool,
                        model,
                        loaded,
                        spec,
                        group_size=config.num_generations,
                        eps=opts.grpo_std_eps,
                        seeds=seeds,
                        seed_pool=seed_pool,
                        generator=generator,
                    )
            except EpisodeError as err:
                raise EpisodeError(
                    f"{err} — in the rollout of update {update}; training stopped before "
                    f"changing any weight (last checkpoint: "
                    f"{last_checkpoint(config.output_dir) or 'none'}, untouched)"
                ) from err
            rollout_time = time.perf_counter() - step_start
            stats = optimize(
                accelerator, model, optimizer, params, loaded, spec, rollout, opts, ppo
            )
            update_tokens = stats.pop("num_tokens")
            metrics = update_metrics(accelerator, rollout, stats, ppo)
            metrics.update(policy.log_values())
            step_time = time.perf_counter() - step_start
            tokens = reduce_sum(accelerator, rollout.tokens + update_tokens)
            metrics.update(
                step=update,
                step_time=step_time,
                # CPU seconds of this process: on a shared machine, the wall clock also counts
                # the time other processes held the cores.
                step_cpu_time=time.process_time() - step_cpu,
                rollout_time=rollout_time,
                num_tokens=tokens,
                tokens_per_s=tokens / step_time,
                peak_memory_mib=peak_memory_mib(),
                wall_time_s=time.perf_counter() - started,
            )
            success, improved = None, False
            if opts.eval_every and (update % opts.eval_every == 0 or update == config.max_steps):
                eval_start = time.perf_counter()
                success = greedy_success_rate(
                    accelerator, loaded, task, opts.policy_mode, opts.eval_episodes
                )
                metrics["eval/success_rate"] = success
                metrics["eval_time"] = time.perf_counter() - eval_start
                out.evaluations.append(
                    {"step": update, "wall_time_s": metrics["wall_time_s"], "success_rate": success}
                )
                improved = best is None or success > best
                best = success if improved else best
            out.log_history.append(metrics)
            out.global_step, out.best_success_rate = update, best
            log_update(accelerator, config, metrics)
            stop = success is not None and success >= (opts.stop_at_success or 2.0)
            if update % config.save_steps == 0 or update == config.max_steps or improved or stop:
                state = {
                    "update": update,
                    "algorithm": config.algorithm,
                    "best_success_rate": best,
                    "wall_time_s": time.perf_counter() - started,
                    "episodic": opts.model_dump(),
                }
                out.last_checkpoint = out.policy_checkpoint = save_checkpoint(
                    accelerator,
                    config.output_dir,
                    update,
                    state,
                    policy.peft_model,
                    keep_last=config.save_total_limit,
                )
                if improved and opts.keep_best:
                    out.best_checkpoint = copy_as_best(accelerator, out.last_checkpoint)
            if stop:
                break
    finally:
        pool.close()
    best_dir = Path(config.output_dir) / BEST_DIR
    # This run's best (or the resumed run's): never a folder left by an unrelated earlier run.
    ours = out.best_checkpoint is not None or (out.resumed_from is not None and best is not None)
    if opts.keep_best and ours and (best_dir / STATE_FILE).is_file():
        load_checkpoint(accelerator, model, best_dir)
        out.best_checkpoint = out.policy_checkpoint = best_dir
        accelerator.print(f"loaded the best policy (greedy success {best}) from {best_dir}")
    out.train_seconds = time.perf_counter() - session_start
    return out


def _check_sizes(config: TrainConfig, opts: EpisodicConfig) -> None:
    envs = config.per_device_batch_size
    if config.algorithm == "episodic_grpo" and envs % config.num_generations:
        raise ValueError(
            f"episodic_grpo runs groups of num_generations={config.num_generations} episodes "
            f"from one seed, so per_device_batch_size (environments per process, {envs}) must "
            f"be a multiple of it; use {config.num_generations * max(1, envs // config.num_generations)}"
        )
    if opts.num_minibatches > envs:
        # Every process must take the same number of optimizer steps, and a rollout may hold as
        # few turns as environments (one-turn episodes).
        raise ValueError(
            f"episodic.num_minibatches={opts.num_minibatches} exceeds per_device_batch_size="
            f"{envs}; use at most {envs} minibatches"
        )
