"""Collect training turns from many environments at once: one batched forward per turn.

Each turn acts through ``policy_head.act_turn``, the head evaluation's ``VLMPolicy`` acts
through, asked to also record what the update needs; episodes are booked in evaluation's
``rollout.EpisodeSlot``. Every stored turn keeps the frame and prompt the policy acted on, the
answer, its log-probability and the value estimate; the update re-scores exactly those (frame,
prompt, answer) triples. Two collection schemes:

- ``collect_steps``: a fixed number of turns in every environment; an episode that ends is
  replaced by a fresh one at once, and episodes run on across updates (PPO);
- ``collect_episodes``: whole episodes, ``group_size`` of them from each environment seed
  (group-relative algorithms).

Neither computes advantages: the algorithm does (``EpisodicAlgorithm.compute_advantages``).

A reward that is not a finite number, or an environment that raises, stops collection with an
``EpisodeError`` naming the task, the seed and the step, before any weight changes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from mmrl_harness.policy_head import Answers, PolicySpec, turn_inputs
from mmrl_harness.rollout import EpisodeSlot
from mmrl_harness.train.episodic.policy import act
from mmrl_harness.train.result import TrainingError
from mmrl_harness.turn_memo import TurnMemo

if TYPE_CHECKING:
    from torch import nn

    from mmrl_harness.models.loading import LoadedVLM
    from mmrl_harness.processed_turns import ProcessedTurns
    from mmrl_harness.results import EpisodeRecord
    from mmrl_harness.tasks.episode import Observation, StepResult, TaskEnv


class EpisodeError(TrainingError):
    """An environment raised, or returned a reward that is not a finite number, in an episode."""


@dataclass
class Rollout:
    """Training turns, one row each, and the episodes that finished while collecting them."""

    frames: list[np.ndarray]  # the frame each turn's policy forward saw (uint8, H x W x 3)
    prompts: list[str]  # the prompt text of each turn
    answers: Answers  # what the policy answered
    logprobs: torch.Tensor  # (S,) log-probability of the answer when it was sampled
    values: torch.Tensor  # (S,) value estimate when it was sampled (0 for collect_episodes)
    rewards: torch.Tensor  # (S,) the task's reward for the turn
    episodes: list[EpisodeRecord] = field(default_factory=list)  # as evaluation records them
    tokens: int = 0  # tokens the rollout's forward passes processed
    # Set by the algorithm's compute_advantages, one entry per turn:
    advantages: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    returns: torch.Tensor = field(default_factory=lambda: torch.zeros(0))  # value-head targets
    # collect_steps only; turns are ordered turn-major, so (S,) tensors reshape to (T, N):
    dones: torch.Tensor | None = None  # (T, N) 1 where the turn ended its episode
    bootstrap: torch.Tensor | None = None  # (T, N) V(final observation) where truncated, else 0
    next_values: torch.Tensor | None = None  # (N,) V of each environment's current observation
    # collect_episodes only:
    episode_ids: torch.Tensor | None = None  # (S,) the episode (= environment) of each turn
    episode_returns: torch.Tensor | None = None  # (E,) each episode's undiscounted return
    # The processor's output for every turn, kept while acting so the update does not run the
    # processor again (None when the processor's batch could not be split per turn):
    processed: ProcessedTurns | None = None

    def __len__(self) -> int:
        return len(self.frames)


@dataclass
class EnvPool:
    """The environments one process steps, and the episode each is in.

    Each episode is kept in an ``EpisodeSlot``, the bookkeeping evaluation's ``run_episodes``
    uses, so a finished training episode is the same ``EpisodeRecord`` an evaluation writes.
    ``observations`` is what the next turn acts on (``None``: the environment needs a reset).
    """

    envs: list[TaskEnv]
    observations: list[Observation | None] = field(default_factory=list)
    slots: list[EpisodeSlot] = field(default_factory=list)
    started: int = 0  # episodes started so far (each record's episode_index)

    def __post_init__(self) -> None:
        self.observations = [None] * len(self.envs)
        self.slots = [EpisodeSlot(env) for env in self.envs]

    def __len__(self) -> int:
        return len(self.envs)

    @property
    def seeds(self) -> list[int]:
        """The seed of each environment's current (or last) episode."""
        return [slot.seed for slot in self.slots]

    def reset(self, index: int, seed: int) -> Observation:
        """Start a new episode in environment ``index``."""
        slot = self.slots[index]
        try:
            obs = slot.start(self.started, seed)
        except Exception as err:
            raise EpisodeError(
                f"task {slot.env.task.name!r}: resetting the environment with seed {seed} "
                f"failed: {type(err).__name__}: {err}"
            ) from err
        self.started += 1
        self.observations[index] = obs
        return obs

    def step(
        self, index: int, text: str, tokens: int = 1
    ) -> tuple[StepResult, EpisodeRecord | None]:
        """Act in environment ``index``: the step's result, and the episode's record when it
        ended. An exception or a non-finite reward names the episode."""
        slot = self.slots[index]
        where = (
            f"task {slot.env.task.name!r}, episode seed {slot.seed}, step {len(slot.rewards) + 1} "
            f"(environment {index} of this process)"
        )
        started = time.perf_counter()
        try:
            result = slot.env.step(text)
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
        return result, slot.advance(text, result, tokens, time.perf_counter() - started)

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
    actor_critic: nn.Module,
    loaded: LoadedVLM,
    observations: Sequence[Observation],
    memo: TurnMemo | None = None,
) -> torch.Tensor:
    """Value estimates of observations (on CPU), e.g. to bootstrap an unfinished episode;
    ``memo``: the rollout's prompt forwards (an observation acted on already is not re-run)."""
    frames, prompts = [o.image for o in observations], [o.text for o in observations]
    ahead = None if memo is None else memo.forward(actor_critic, loaded, frames, prompts)
    if ahead is not None and ahead.values is not None:
        return ahead.values.float().cpu()
    inputs, keep = turn_inputs(loaded, frames, prompts)
    return actor_critic(inputs, keep)[1].float().cpu()  # type: ignore[no-any-return]


def collect_steps(
    pool: EnvPool,
    actor_critic: nn.Module,
    loaded: LoadedVLM,
    spec: PolicySpec,
    *,
    steps: int,
    bootstrap: bool,
    seeds: np.random.Generator,
    seed_pool: Sequence[int],
    generator: torch.Generator,
) -> Rollout:
    """``steps`` turns in each environment; episodes continue into the next call.

    With ``bootstrap`` the value head also scores each truncated episode's final observation
    (running out of time is not a terminal state) and every environment's next observation, the
    values GAE starts from. Observations repeat; each distinct one is run through the processor
    and the model once per call (``TurnMemo``: the weights do not change while collecting).
    """
    memo = TurnMemo(spec.action_ids)
    n = len(pool)
    for i in range(n):
        if pool.observations[i] is None:
            pool.reset(i, int(seeds.choice(seed_pool)))
    turns: list[_StepTurn] = []
    for _ in range(steps):
        turns.append(
            _step_all(
                pool, actor_critic, loaded, spec, bootstrap, seeds, seed_pool, generator, memo
            )
        )
    next_values = None
    if bootstrap:
        next_values = state_values(
            actor_critic, loaded, [o for o in pool.observations if o is not None], memo
        )
    return Rollout(
        frames=[f for t in turns for f in t.frames],
        prompts=[p for t in turns for p in t.prompts],
        answers=Answers.concat([t.answers for t in turns]),
        logprobs=torch.cat([t.logprobs for t in turns]),
        values=torch.cat([t.values for t in turns]),
        rewards=torch.cat([t.rewards for t in turns]),
        episodes=[e for t in turns for e in t.episodes],
        tokens=sum(t.tokens for t in turns),
        dones=torch.stack([t.dones for t in turns]),
        bootstrap=torch.stack([t.bootstrap for t in turns]),
        next_values=next_values,
        processed=_concat_processed([t.processed for t in turns]),
    )


def _concat_processed(parts: Sequence[ProcessedTurns | None]) -> ProcessedTurns | None:
    """All turns' processor outputs in order; ``None`` if any turn's is missing."""
    from mmrl_harness.processed_turns import ProcessedTurns

    kept = [p for p in parts if p is not None]
    return ProcessedTurns.concat(kept) if kept and len(kept) == len(parts) else None


@dataclass
class _StepTurn:
    """One turn of every environment in ``collect_steps``."""

    frames: list[np.ndarray]
    prompts: list[str]
    answers: Answers
    logprobs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor
    bootstrap: torch.Tensor
    episodes: list[EpisodeRecord]
    tokens: int
    processed: ProcessedTurns | None


def _step_all(
    pool: EnvPool,
    actor_critic: nn.Module,
    loaded: LoadedVLM,
    spec: PolicySpec,
    bootstrap: bool,
    seeds: np.random.Generator,
    seed_pool: Sequence[int],
    generator: torch.Generator,
    memo: TurnMemo,
) -> _StepTurn:
    """Act once in every environment; an ended episode is replaced by a fresh one at once."""
    n = len(pool)
    frames, prompts = _turn_batch(pool, range(n))
    answers, scores = act(actor_critic, loaded, spec, frames, prompts, generator, memo)
    reward, done, final = torch.zeros(n), torch.zeros(n), torch.zeros(n)
    episodes: list[EpisodeRecord] = []
    truncated: list[tuple[int, Observation]] = []
    tokens = answers.mask.sum(1).long().tolist()
    for i in range(n):
        result, record = pool.step(i, answers.texts[i], tokens[i])
        reward[i] = result.reward
        if record is None:
            pool.observations[i] = result.observation
            continue
        done[i] = 1.0
        episodes.append(record)
        if result.truncated and not result.terminated:
            truncated.append((i, result.observation))
        pool.reset(i, int(seeds.choice(seed_pool)))
    if bootstrap and truncated:
        values = state_values(actor_critic, loaded, [o for _, o in truncated], memo)
        for (i, _), value in zip(truncated, values, strict=True):
            final[i] = value
    return _StepTurn(
        frames,
        prompts,
        answers,
        scores.logprobs.float().cpu(),
        scores.values.float().cpu(),
        reward,
        done,
        final,
        episodes,
        scores.tokens,
        scores.processed,
    )


def collect_episodes(
    pool: EnvPool,
    actor_critic: nn.Module,
    loaded: LoadedVLM,
    spec: PolicySpec,
    *,
    group_size: int,
    seeds: np.random.Generator,
    seed_pool: Sequence[int],
    generator: torch.Generator,
) -> Rollout:
    """One whole episode per environment, ``group_size`` per seed (environment ``i`` runs
    episode ``i``; ``episode_ids`` maps turns to episodes). Every turn runs its own batched
    forward (no ``TurnMemo``), so acting is bit for bit an evaluation's batch of the episodes
    still running (``tests/test_policy_head.py`` pins it)."""
    n = len(pool)
    if n % group_size:
        raise ValueError(
            f"groups of {group_size} episodes (num_generations) need a multiple of {group_size} "
            f"environments per process (per_device_batch_size), not {n}"
        )
    group_seeds = [int(s) for s in seeds.choice(seed_pool, size=n // group_size)]
    for i in range(n):
        pool.reset(i, group_seeds[i // group_size])
    turns: list[list[_EpisodeTurn]] = [[] for _ in range(n)]
    active = list(range(n))
    episodes: list[EpisodeRecord] = []
    tokens = 0
    while active:
        turn_frames, turn_prompts = _turn_batch(pool, active)
        answers, scores = act(actor_critic, loaded, spec, turn_frames, turn_prompts, generator)
        tokens += scores.tokens
        generated = answers.mask.sum(1).long().tolist()
        still = []
        for row, i in enumerate(active):
            result, record = pool.step(i, answers.texts[row], generated[row])
            logprob = float(scores.logprobs[row])
            processed = None if scores.processed is None else scores.processed.select([row])
            turns[i].append(
                _EpisodeTurn(
                    turn_frames[row],
                    turn_prompts[row],
                    answers.select([row]),
                    logprob,
                    result.reward,
                    processed,
                )
            )
            if record is not None:
                episodes.append(record)
                pool.observations[i] = None
            else:
                pool.observations[i] = result.observation
                still.append(i)
        active = still
    rows = [(i, turn) for i in range(n) for turn in turns[i]]
    return Rollout(
        frames=[t.frame for _, t in rows],
        prompts=[t.prompt for _, t in rows],
        answers=Answers.concat([t.answer for _, t in rows]),
        logprobs=torch.tensor([t.logprob for _, t in rows]),
        values=torch.zeros(len(rows)),
        rewards=torch.tensor([t.reward for _, t in rows]),
        episodes=episodes,
        tokens=tokens,
        episode_ids=torch.tensor([i for i, _ in rows], dtype=torch.long),
        episode_returns=torch.tensor([sum(t.reward for t in episode) for episode in turns]),
        processed=_concat_processed([t.processed for _, t in rows]),
    )


@dataclass
class _EpisodeTurn:
    """One turn of one episode in ``collect_episodes``."""

    frame: np.ndarray
    prompt: str
    answer: Answers
    logprob: float
    reward: float
    processed: ProcessedTurns | None
