"""Collect training turns from many environments at once: one batched forward per turn.

Every stored turn keeps the frame and prompt the policy acted on, the answer, its
log-probability and the value estimate; the update re-scores exactly those (frame, prompt,
answer) triples. Two collection schemes:

- ``collect_ppo``: ``rollout_steps`` turns in every environment; an episode that ends is
  replaced by a fresh one at once, and episodes run on across updates. Advantages by GAE.
- ``collect_groups``: whole episodes, ``group_size`` of them from each environment seed; every
  turn of an episode gets the episode's group-relative advantage.

A reward that is not a finite number, or an environment that raises, stops collection with an
``EpisodeError`` naming the task, the seed and the step, before any weight changes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from mmrl_harness.train.episodic_policy import Answers, PolicySpec, act, model_inputs
from mmrl_harness.train.ppo import compute_gae, group_relative_advantages
from mmrl_harness.train.result import TrainingError

if TYPE_CHECKING:
    from torch import nn

    from mmrl_harness.models.loading import LoadedVLM
    from mmrl_harness.tasks.episode import Observation, StepResult, TaskEnv


class EpisodeError(TrainingError):
    """An environment raised, or returned a reward that is not a finite number, in an episode."""


@dataclass(frozen=True)
class FinishedEpisode:
    """One episode that ended during a rollout (its return is the task's, undiscounted)."""

    seed: int
    episode_return: float
    length: int
    success: bool


@dataclass
class Rollout:
    """Training turns, one row each, and the episodes that finished while collecting them."""

    frames: list[np.ndarray]  # the frame each turn's policy forward saw (uint8, H x W x 3)
    prompts: list[str]  # the prompt text of each turn
    answers: Answers  # what the policy answered
    logprobs: torch.Tensor  # (S,) log-probability of the answer when it was sampled
    values: torch.Tensor  # (S,) value estimate when it was sampled (0 for episodic_grpo)
    rewards: torch.Tensor  # (S,) the task's reward for the turn
    advantages: torch.Tensor  # (S,)
    returns: torch.Tensor  # (S,) regression targets of the value head
    episodes: list[FinishedEpisode] = field(default_factory=list)
    tokens: int = 0  # tokens the rollout's forward passes processed

    def __len__(self) -> int:
        return len(self.frames)


@dataclass
class EnvPool:
    """The environments one process steps, and the episode each is in."""

    envs: list[TaskEnv]
    observations: list[Observation | None] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)  # of the episode in progress, so far
    lengths: list[int] = field(default_factory=list)  # turns taken in the episode in progress

    def __post_init__(self) -> None:
        n = len(self.envs)
        self.observations, self.seeds = [None] * n, [0] * n
        self.returns, self.lengths = [0.0] * n, [0] * n

    def __len__(self) -> int:
        return len(self.envs)

    def reset(self, index: int, seed: int) -> Observation:
        """Start a new episode in environment ``index``."""
        env = self.envs[index]
        try:
            obs = env.reset(seed=seed)
        except Exception as err:
            raise EpisodeError(
                f"task {env.task.name!r}: resetting the environment with seed {seed} failed: "
                f"{type(err).__name__}: {err}"
            ) from err
        self.observations[index], self.seeds[index] = obs, seed
        self.returns[index], self.lengths[index] = 0.0, 0
        return obs

    def step(self, index: int, text: str) -> StepResult:
        """Act in environment ``index``; an exception or a non-finite reward names the episode."""
        env, seed = self.envs[index], self.seeds[index]
        where = (
            f"task {env.task.name!r}, episode seed {seed}, step {self.lengths[index] + 1} "
            f"(environment {index} of this process)"
        )
        try:
            result = env.step(text)
        except Exception as err:
            raise EpisodeError(
                f"{where}: the environment raised {type(err).__name__}: {err} (action text "
                f"{text!r})"
            ) from err
        if not math.isfinite(result.reward):
            raise EpisodeError(
                f"{where}: the reward is {result.reward!r}, not a finite number (action text "
                f"{text!r}); fix the task's reward mapping (reward.scale, reward.offset, "
                "reward.events) or the environment's reward"
            )
        self.returns[index] += result.reward
        self.lengths[index] += 1
        return result

    def finished(self, index: int, result: StepResult) -> FinishedEpisode:
        """The record of the episode that ``result`` ended in environment ``index``."""
        return FinishedEpisode(
            self.seeds[index], self.returns[index], self.lengths[index], result.info.success
        )

    def close(self) -> None:
        """Close every environment."""
        for env in self.envs:
            env.close()


def _turn_batch(pool: EnvPool, rows: Sequence[int]) -> tuple[list[np.ndarray], list[str]]:
    observations = [pool.observations[i] for i in rows]
    assert all(o is not None for o in observations)
    return [o.image for o in observations], [o.text for o in observations]  # type: ignore[union-attr]


@torch.no_grad()
def state_values(
    actor_critic: nn.Module, loaded: LoadedVLM, observations: Sequence[Observation]
) -> torch.Tensor:
    """Value estimates of observations (on CPU), e.g. to bootstrap an unfinished episode."""
    inputs, keep = model_inputs(
        loaded, [o.image for o in observations], [o.text for o in observations]
    )
    return actor_critic(inputs, keep)[1].float().cpu()  # type: ignore[no-any-return]


def collect_ppo(
    pool: EnvPool,
    actor_critic: nn.Module,
    loaded: LoadedVLM,
    spec: PolicySpec,
    *,
    steps: int,
    gamma: float,
    gae_lambda: float,
    seeds: np.random.Generator,
    seed_pool: Sequence[int],
    generator: torch.Generator,
) -> Rollout:
    """``steps`` turns in each environment, GAE advantages; episodes continue into the next call.

    A truncated episode (step limit) is not a terminal state: its last reward gets
    ``gamma * V(final observation)`` added, so the value head is not taught that time ran out.
    """
    n = len(pool)
    for i in range(n):
        if pool.observations[i] is None:
            pool.reset(i, int(seeds.choice(seed_pool)))
    frames: list[np.ndarray] = []
    prompts: list[str] = []
    answer_parts: list[Answers] = []
    logprobs, values, rewards, targets, dones = [], [], [], [], []
    episodes: list[FinishedEpisode] = []
    tokens = 0
    for _ in range(steps):
        turn_frames, turn_prompts = _turn_batch(pool, range(n))
        answers, scores = act(actor_critic, loaded, spec, turn_frames, turn_prompts, generator)
        tokens += scores.tokens
        frames += turn_frames
        prompts += turn_prompts
        answer_parts.append(answers)
        logprobs.append(scores.logprobs.float().cpu())
        values.append(scores.values.float().cpu())
        reward = torch.zeros(n)
        done = torch.zeros(n)
        truncated: list[tuple[int, Observation]] = []
        for i in range(n):
            result = pool.step(i, answers.texts[i])
            reward[i] = result.reward
            if not result.done:
                pool.observations[i] = result.observation
                continue
            done[i] = 1.0
            episodes.append(pool.finished(i, result))
            if result.truncated and not result.terminated:
                truncated.append((i, result.observation))
            pool.reset(i, int(seeds.choice(seed_pool)))
        rewards.append(reward)
        target = reward.clone()  # what GAE sees; `rewards` stays the task's, for the metrics
        if truncated:
            bootstrap = state_values(actor_critic, loaded, [o for _, o in truncated])
            for (i, _), value in zip(truncated, bootstrap, strict=True):
                target[i] += gamma * value
        targets.append(target)
        dones.append(done)
    last = [o for o in pool.observations if o is not None]
    next_value = state_values(actor_critic, loaded, last)
    advantages, returns = compute_gae(
        torch.stack(targets),
        torch.stack(values),
        torch.stack(dones),
        next_value,
        gamma=gamma,
        gae_lambda=gae_lambda,
    )
    return Rollout(
        frames,
        prompts,
        Answers.concat(answer_parts),
        torch.cat(logprobs),
        torch.cat(values),
        torch.cat(rewards),
        advantages.reshape(-1),
        returns.reshape(-1),
        episodes,
        tokens,
    )


def collect_groups(
    pool: EnvPool,
    actor_critic: nn.Module,
    loaded: LoadedVLM,
    spec: PolicySpec,
    *,
    group_size: int,
    eps: float,
    seeds: np.random.Generator,
    seed_pool: Sequence[int],
    generator: torch.Generator,
) -> Rollout:
    """One whole episode per environment, ``group_size`` per seed; group-relative advantages."""
    n = len(pool)
    if n % group_size:
        raise ValueError(
            f"episodic_grpo runs groups of {group_size} episodes (num_generations) but this "
            f"process steps {n} environments (per_device_batch_size); make it a multiple"
        )
    group_seeds = [int(s) for s in seeds.choice(seed_pool, size=n // group_size)]
    for i in range(n):
        pool.reset(i, group_seeds[i // group_size])
    turns: list[list[tuple[np.ndarray, str, Answers, float, float]]] = [[] for _ in range(n)]
    active = list(range(n))
    episodes: list[FinishedEpisode] = []
    tokens = 0
    while active:
        turn_frames, turn_prompts = _turn_batch(pool, active)
        answers, scores = act(actor_critic, loaded, spec, turn_frames, turn_prompts, generator)
        tokens += scores.tokens
        still = []
        for row, i in enumerate(active):
            result = pool.step(i, answers.texts[row])
            logprob = float(scores.logprobs[row])
            turns[i].append(
                (turn_frames[row], turn_prompts[row], answers.select([row]), logprob, result.reward)
            )
            if result.done:
                episodes.append(pool.finished(i, result))
                pool.observations[i] = None
            else:
                pool.observations[i] = result.observation
                still.append(i)
        active = still
    episode_returns = torch.tensor([sum(t[4] for t in episode) for episode in turns])
    groups = torch.arange(n) // group_size
    advantage = group_relative_advantages(episode_returns, groups, eps=eps)
    rows = [(i, turn) for i in range(n) for turn in turns[i]]
    per_turn = torch.tensor([float(advantage[i]) for i, _ in rows])
    return Rollout(
        [t[0] for _, t in rows],
        [t[1] for _, t in rows],
        Answers.concat([t[2] for _, t in rows]),
        torch.tensor([t[3] for _, t in rows]),
        torch.zeros(len(rows)),
        torch.tensor([t[4] for _, t in rows]),
        per_turn,
        torch.tensor([float(episode_returns[i]) for i, _ in rows]),
        episodes,
        tokens,
    )
