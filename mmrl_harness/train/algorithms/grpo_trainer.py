"""The TRL half of ``grpo``: ``GRPOConfig`` from a ``TrainConfig``, and ``GRPOTrainer`` on the task.

GRPO on single-turn tasks through TRL's ``GRPOTrainer``; the reward IS the task's reward.

The dataset holds one row per training seed: the task's prompt as a one-turn conversation with
an image placeholder (exactly what ``build_inputs`` renders at evaluation), the frame, and the
seed. The reward function replays each completion in the task environment reset with that seed,
so training optimises the very reward and parser evaluation scores, and no answer key has to be
copied out of the environment. Everything else (sampling groups, advantages, the DAPO loss,
checkpoints, Accelerate/DeepSpeed/FSDP, vLLM) is TRL's.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import PrinterCallback, ProgressCallback, TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from mmrl_harness.tasks.files import Problem
from mmrl_harness.train.callbacks import ManifestCallback, RichProgressCallback, RunMeters
from mmrl_harness.train.checkpoints import (
    check_resume_config,
    last_checkpoint,
    refuse_existing_checkpoints,
    resume_checkpoint,
)
from mmrl_harness.train.config import TrainConfig, TrainConfigError
from mmrl_harness.train.distributed import is_main_process
from mmrl_harness.train.lock import output_dir_lock
from mmrl_harness.train.manifest import manifest_template, write_manifest
from mmrl_harness.train.result import TrainingError, TrainResult

if TYPE_CHECKING:
    from datasets import Dataset
    from rich.console import Console

    from mmrl_harness.tasks.gym_task import GymTaskEnv
    from mmrl_harness.tasks.schema import TaskDefinition
    from mmrl_harness.train.policy import PolicyModel


class RewardError(TrainingError):
    """The task's reward could not score a completion (it raised, or was NaN or infinite)."""


# -- data ------------------------------------------------------------------------------------
def build_grpo_dataset(task: TaskDefinition, seeds: Sequence[int]) -> Dataset:
    """One row per seed: ``prompt`` (a conversation with an image placeholder), ``image``, ``seed``.

    Each frame is encoded (PNG, as ``datasets`` stores images anyway) as soon as it is drawn:
    holding 1000 decoded 224 px frames until the table is built cost ~150 MiB of resident memory
    that the process never gave back.
    """
    from datasets import Dataset
    from datasets import Image as ImageFeature

    from mmrl_harness.models.generation import user_turn
    from mmrl_harness.tasks.gym_task import make_task_env

    env = make_task_env(task)
    encode = ImageFeature().encode_example
    prompts, images = [], []
    try:
        for seed in seeds:
            observation = env.reset(seed=seed)
            prompts.append(user_turn(observation.text))
            images.append(encode(observation.to_pil()))
    finally:
        env.close()
    table = Dataset.from_dict({"prompt": prompts, "image": images, "seed": list(seeds)})
    return table.cast_column("image", ImageFeature())


def _completion_text(completion: Any) -> str:
    # Conversational datasets give [{"role": "assistant", "content": "..."}] per completion.
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    return str(completion)


class TaskReward:
    """GRPO reward function ``(completions, seed, **kwargs) -> list[float]``: the task's reward.

    Each completion is played as the one answer of the episode reset with its row's seed. Also
    logs the success rate and invalid-answer rate of the batch through TRL's ``log_metric``.
    """

    #: Scored episodes remembered per run (an LRU); a seeded single-turn episode is a pure
    #: function of (seed, text), and replaying it (reset renders a frame) costs ~0.5 ms.
    cache_size = 65_536

    def __init__(self, task: TaskDefinition) -> None:
        self.task = task
        self.__name__ = "task_reward"  # TRL names the reward's log keys after __name__
        self._env: GymTaskEnv | None = None
        self._cache: OrderedDict[tuple[int, str], tuple[float, bool, bool]] = OrderedDict()

    def __call__(
        self, completions: Sequence[Any], seed: Sequence[int], **kwargs: Any
    ) -> list[float]:
        rewards, successes, invalid = [], 0, 0
        for completion, episode_seed in zip(completions, seed, strict=True):
            reward, success, valid = self.score(int(episode_seed), _completion_text(completion))
            rewards.append(reward)
            successes += success
            invalid += not valid
        log_metric = kwargs.get("log_metric")
        if callable(log_metric) and rewards:
            log_metric("success", successes / len(rewards))
            log_metric("invalid_action_rate", invalid / len(rewards))
        return rewards

    def score(self, seed: int, text: str) -> tuple[float, bool, bool]:
        """``(reward, success, action_is_valid)`` of answering episode ``seed`` with ``text``."""
        from mmrl_harness.tasks.gym_task import make_task_env

        key = (seed, text)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        where = f"task {self.task.name!r}, seed {seed}, completion {text!r}"
        try:
            if self._env is None:
                self._env = make_task_env(self.task)
            self._env.reset(seed=seed)
            result = self._env.step(text)
        except Exception as err:
            raise RewardError(
                f"the reward failed on the episode ({where}): {type(err).__name__}: {err}. "
                "Training stopped; the checkpoints written so far are intact (resume with "
                "--resume once the task is fixed)"
            ) from err
        if not math.isfinite(result.reward):
            raise RewardError(
                f"the reward is {result.reward} on the episode ({where}); GRPO needs finite "
                "rewards (TRL would silently treat NaN as 'no reward'). Check the task's "
                "reward: mapping. Training stopped; the checkpoints written so far are intact"
            )
        scored = (float(result.reward), bool(result.info.success), result.info.action_is_valid)
        self._cache[key] = scored
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return scored


# -- trainer ---------------------------------------------------------------------------------
class HarnessGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` that adds tokens/s, peak memory and the fusion adapter's values to each
    training log row (before TRL's own metrics are merged, so every logger sees them)."""

    def __init__(self, *args: Any, meters: RunMeters, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.meters = meters

    def _get_per_token_logps_and_entropies(
        self,
        model: Any,
        input_ids: Any,
        attention_mask: Any,
        logits_to_keep: int,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        # TRL scores [left-padded prompt | completion] in one forward, the completion being the
        # last ``logits_to_keep`` positions: tell the fusion hooks, so text conditioning sees
        # the prompt only, as in the generate() that sampled the completion.
        from mmrl_harness.fusion.image_context import completion_boundary

        with completion_boundary(model, input_ids.shape[1] - logits_to_keep):
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
            )

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training step row, not the end-of-run summary
            logs.update(self.meters.collect(float(self.state.num_input_tokens_seen)))
        super().log(logs, start_time)


class _StartMeters(TrainerCallback):
    def __init__(self, meters: RunMeters) -> None:
        self.meters = meters

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.meters.start(float(state.num_input_tokens_seen))


def _grpo_field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(GRPOConfig)]


def grpo_arguments(config: TrainConfig, policy: PolicyModel | None = None) -> GRPOConfig:
    """The ``trl.GRPOConfig`` of a run: the shared fields mapped, then ``config.grpo`` on top."""
    import torch

    known = set(_grpo_field_names())
    unknown = [k for k in config.grpo if k not in known]
    if unknown:
        problems = []
        for key in unknown:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "a trl.GRPOConfig field"
            problems.append(Problem(f"grpo.{key}", "not a trl.GRPOConfig argument", hint))
        raise TrainConfigError(None, problems)
    use_cpu = config.use_cpu if config.use_cpu is not None else not torch.cuda.is_available()
    kwargs: dict[str, Any] = {
        "output_dir": config.output_dir,
        "max_steps": config.max_steps,
        "learning_rate": config.learning_rate,
        "per_device_train_batch_size": config.per_device_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "num_generations": config.num_generations,
        "max_completion_length": config.max_new_tokens,
        "temperature": config.temperature,
        "save_strategy": "steps",
        "save_steps": config.save_steps,
        "save_total_limit": config.save_total_limit,
        "logging_steps": config.logging_steps,
        "report_to": config.report_to,
        "seed": config.seed,
        "use_cpu": use_cpu,
        "disable_tqdm": True,  # RichProgressCallback shows progress instead
    }
    if use_cpu:  # facts measured here: these TRL defaults fail or crawl on CPU
        kwargs.update(bf16=False, fp16=False, activation_checkpointing=False)
    suppress = _suppressed_tokens(policy)
    if suppress:
        # TRL replaces the model's generation config and suppresses only the image token; keep
        # the model's own list too (pad and role tokens must never be sampled mid-answer).
        kwargs["generation_kwargs"] = {"suppress_tokens": suppress}
    user = dict(config.grpo)
    if "generation_kwargs" in user and "generation_kwargs" in kwargs:
        user["generation_kwargs"] = {
            **kwargs["generation_kwargs"],
            **(user["generation_kwargs"] or {}),
        }
    kwargs.update(user)
    try:
        return GRPOConfig(**kwargs)
    except (ValueError, TypeError) as err:
        field = "num_generations" if "num_generations" in str(err) else "grpo"
        raise TrainConfigError(
            None, [Problem(field, f"trl.GRPOConfig rejected the settings: {err}")]
        ) from None


def _suppressed_tokens(policy: PolicyModel | None) -> list[int]:
    if policy is None:
        return []
    model = policy.loaded.model
    ids = list(getattr(model.generation_config, "suppress_tokens", None) or [])
    image_token = getattr(model.config, policy.loaded.anatomy.image_token_id_attr, None)
    if ids and image_token is not None and image_token not in ids:
        ids.append(image_token)
    return ids


def grpo_task(config: TrainConfig) -> TaskDefinition:
    """The run's task (overrides applied); a ``TrainConfigError`` unless it is single-turn."""
    from mmrl_harness.evaluate import resolve_task

    task = resolve_task(config.task, config.task_overrides)
    if task.kind != "single_turn":
        raise TrainConfigError(
            None,
            [
                Problem(
                    "algorithm",
                    f"grpo trains single-turn tasks; {task.name!r} is {task.kind}",
                    "algorithm ppo or episodic_grpo for multi-turn tasks",
                )
            ],
        )
    return task


def _resume_checkpoint(config: TrainConfig, main_process: bool) -> Path | None:
    """The intact checkpoint to resume from (``checkpoints.resume_checkpoint``), checked
    against the run's config; None for a fresh run."""
    if not config.resume:
        refuse_existing_checkpoints(config)
        return None
    from accelerate import PartialState

    checkpoint = resume_checkpoint(
        config.output_dir,
        main_process=main_process,
        barrier=PartialState().wait_for_everyone,
    )
    if checkpoint is not None:
        check_resume_config(checkpoint, config)
    return checkpoint


#: What ``trainer.save_model`` writes that ``mmrl eval --checkpoint <output_dir>`` reads.
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def train_grpo(
    config: TrainConfig,
    policy: PolicyModel,
    *,
    console: Console | None = None,
    callbacks: Sequence[TrainerCallback] = (),
) -> TrainResult:
    """Fine-tune ``policy`` with GRPO on ``config.task`` (single-turn); resumes when it can.

    Holds ``output_dir``'s lock throughout (``lock.output_dir_lock``).
    """
    with output_dir_lock(config.output_dir):
        return _train_grpo(config, policy, console=console, callbacks=callbacks)


def _train_grpo(
    config: TrainConfig,
    policy: PolicyModel,
    *,
    console: Console | None,
    callbacks: Sequence[TrainerCallback],
) -> TrainResult:
    task = grpo_task(config)
    args = grpo_arguments(config, policy)
    main_process = is_main_process()
    resume_from = _resume_checkpoint(config, main_process)
    manifest = manifest_template(config, policy)
    dataset = build_grpo_dataset(task, config.train_seeds.seeds())
    meters = RunMeters(policy.log_values)
    trainer = HarnessGRPOTrainer(
        model=policy.peft_model,
        reward_funcs=[TaskReward(task)],
        args=args,
        train_dataset=dataset,
        processing_class=policy.loaded.processor,
        callbacks=[
            _StartMeters(meters),
            RichProgressCallback(console),
            ManifestCallback(manifest),
            *callbacks,
        ],
        meters=meters,
    )
    for default in (PrinterCallback, ProgressCallback):  # they print raw dicts / tqdm bars
        trainer.remove_callback(default)
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    # The final adapter (LoRA + fusion modules + lm_head) beside the checkpoints, so
    # `mmrl eval --checkpoint <output_dir>` needs no step number.
    trainer.save_model(config.output_dir)
    if trainer.is_world_process_zero():
        write_manifest(config.output_dir, manifest, trainer.state.global_step, ADAPTER_FILES)
    return TrainResult(
        algorithm="grpo",
        output_dir=Path(config.output_dir),
        global_step=trainer.state.global_step,
        train_seconds=time.perf_counter() - started,
        log_history=list(trainer.state.log_history),
        last_checkpoint=last_checkpoint(config.output_dir),
        resumed_from=resume_from,
        policy=policy,
    )
