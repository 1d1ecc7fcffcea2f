"""Run a policy on many episodes at once: one batched forward per turn across environments.

Environments finish at different turns; a finished slot is refilled with the next episode right
away (continuous batching), so the batch stays full until the seed list runs out. Episodes are
seeded and the policy's sampling RNG is seeded, so the same model, task, seeds and batch size give
identical episode records.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from mmrl_harness.errors import InputError
from mmrl_harness.policy_head import PolicyMode, action_token_ids
from mmrl_harness.results import EpisodeRecord
from mmrl_harness.tasks.episode import Observation, StepResult, TaskEnv

if TYPE_CHECKING:
    import torch
    from transformers import BatchFeature

    from mmrl_harness.models.loading import LoadedVLM
    from mmrl_harness.policy_head import PolicySpec, TurnModel

__all__ = [
    "EpisodeSlot",
    "Policy",
    "PolicyMode",
    "PolicyOutput",
    "VLMPolicy",
    "action_token_ids",
    "run_episodes",
]


@dataclass(frozen=True)
class PolicyOutput:
    """What the policy said at one turn."""

    text: str
    tokens: int  # tokens generated for this turn


class Policy(Protocol):
    """Anything that answers a batch of observations with one text each."""

    def act(
        self, observations: Sequence[Observation], action_words: Sequence[str]
    ) -> list[PolicyOutput]:
        """One output per observation, in order."""
        ...


class VLMPolicy:
    """A loaded VLM as a policy, acting through the one policy head (``policy_head.act_turn``).

    ``mode="generate"`` decodes free text that the task parses (any task). ``mode="action_logits"``
    scores only the action words at the answer position and picks one (greedy or sampled from a
    softmax over those logits) — the policy head the episodic trainers optimise (they act through
    the same ``act_turn``), and a much stronger baseline for tasks with a small discrete action
    set. Sampled free text comes from the full softmax at ``temperature`` (no top-k/top-p), the
    distribution the trainers score.
    """

    def __init__(
        self,
        loaded: LoadedVLM,
        *,
        mode: PolicyMode = "generate",
        do_sample: bool = False,
        temperature: float = 1.0,
        max_new_tokens: int = 8,
        seed: int = 0,
    ) -> None:
        if mode not in ("generate", "action_logits"):
            raise InputError(f"unknown policy mode {mode!r}; use 'generate' or 'action_logits'")
        if temperature <= 0:
            raise InputError(f"temperature must be > 0, got {temperature}; use do_sample=False")
        self.loaded = loaded
        self.mode = mode
        self.do_sample = do_sample
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens
        self.seed = seed
        self._specs: dict[tuple[str, ...], PolicySpec] = {}

    def reseed(self) -> None:
        """Reset the sampling RNG (called at the start of every rollout)."""
        import torch

        torch.manual_seed(self.seed)

    def spec(self, action_words: Sequence[str]) -> PolicySpec:
        """The ``PolicySpec`` this policy acts with for these action words (resolved once)."""
        from mmrl_harness.policy_head import policy_spec

        words = tuple(action_words)
        if words not in self._specs:
            self._specs[words] = policy_spec(
                self.loaded,
                self.mode,
                words,
                self.temperature,
                self.max_new_tokens,
                do_sample=self.do_sample,
            )
        return self._specs[words]

    def model(self) -> TurnModel:
        """The forward the head reads: the VLM's logits, no value head."""
        from mmrl_harness.policy_head import LogitsOnly

        return LogitsOnly(self.loaded.model)

    def act(
        self, observations: Sequence[Observation], action_words: Sequence[str]
    ) -> list[PolicyOutput]:
        """Answer every observation with one batched forward (or one batched generate)."""
        from mmrl_harness.policy_head import act_turn

        spec = self.spec(action_words)
        answers, _ = act_turn(
            self.model(),
            self.loaded,
            spec,
            [o.image for o in observations],
            [o.text for o in observations],
            record=False,
        )
        if spec.mode == "action_logits":
            return [PolicyOutput(t, 1) for t in answers.texts]
        pad = self.loaded.tokenizer.pad_token_id
        counts = (answers.actions != pad).sum(dim=1).tolist()
        return [PolicyOutput(t, int(n)) for t, n in zip(answers.texts, counts, strict=True)]

    def action_scores(self, inputs: BatchFeature, action_words: Sequence[str]) -> torch.Tensor:
        """``(batch, len(action_words))``: the head ``act`` picks from (the action words' logits
        at the answer position, divided by the temperature); ``log_softmax`` of a row is the
        policy's log-probability of each action."""
        import torch

        from mmrl_harness.models.generation import add_position_ids
        from mmrl_harness.policy_head import answer_scores

        spec = self.spec(action_words)
        with torch.no_grad():
            logits, _ = self.model()(add_position_ids(self.loaded, dict(inputs)), 1)
        return answer_scores(spec, logits)


@dataclass
class EpisodeSlot:
    """One environment and the episode it is running: the one episode bookkeeping.

    ``run_episodes`` (evaluation) and the episodic trainers' ``EnvPool`` both keep their
    episodes here and turn them into ``EpisodeRecord`` the same way.
    """

    env: TaskEnv
    index: int = -1
    seed: int = 0
    observation: Observation | None = None
    actions: list[str] = field(default_factory=list)
    responses: list[str] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    invalid: int = 0
    tokens: int = 0
    seconds: float = 0.0

    def start(self, index: int, seed: int) -> Observation:
        """Reset the environment with ``seed`` for episode ``index``; the first observation."""
        started = time.perf_counter()
        self.index, self.seed = index, seed
        self.actions, self.responses, self.rewards = [], [], []
        self.invalid, self.tokens = 0, 0
        self.observation = self.env.reset(seed=seed)
        self.seconds = time.perf_counter() - started
        return self.observation

    def advance(
        self, text: str, result: StepResult, tokens: int, seconds: float
    ) -> EpisodeRecord | None:
        """Book one step (the answer ``text`` and what the environment returned for it); the
        episode's record when it ended, else ``None``."""
        self.responses.append(text)
        self.actions.append(result.info.action or "")
        self.rewards.append(result.reward)
        self.invalid += not result.info.action_is_valid
        self.tokens += tokens
        self.seconds += seconds
        if not result.done:
            self.observation = result.observation
            return None
        self.observation = None
        return EpisodeRecord(
            task=self.env.task.name,
            seed=self.seed,
            episode_index=self.index,
            actions=self.actions,
            responses=self.responses,
            rewards=self.rewards,
            episode_return=float(sum(self.rewards)),
            length=len(self.rewards),
            success=result.info.success,
            invalid_actions=self.invalid,
            truncated=result.truncated and not result.terminated,
            tokens=self.tokens,
            wall_time_s=self.seconds,
            # Optional on TaskEnv: only envs that know their shortest episode report it.
            optimal_length=getattr(self.env, "optimal_length", None),
        )


def run_episodes(
    make_env: Callable[[], TaskEnv],
    policy: Policy,
    seeds: Sequence[int],
    *,
    batch_size: int = 16,
    on_episode: Callable[[EpisodeRecord], None] | None = None,
) -> list[EpisodeRecord]:
    """One episode per seed, ``batch_size`` at a time; records come back in seed order."""
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    reseed = getattr(policy, "reseed", None)
    if reseed is not None:
        reseed()
    pending = list(enumerate(seeds))[::-1]
    slots = [EpisodeSlot(make_env()) for _ in range(min(batch_size, len(seeds)))]
    records: dict[int, EpisodeRecord] = {}
    try:
        while pending or any(s.observation is not None for s in slots):
            for slot in slots:
                if slot.observation is None and pending:
                    slot.start(*pending.pop())
            active = [s for s in slots if s.observation is not None]
            started = time.perf_counter()
            outputs = policy.act([s.observation for s in active], active[0].env.action_words)  # type: ignore[misc]
            share = (time.perf_counter() - started) / len(active)
            for slot, out in zip(active, outputs, strict=True):
                stepped = time.perf_counter()
                result = slot.env.step(out.text)
                seconds = share + time.perf_counter() - stepped
                record = slot.advance(out.text, result, out.tokens, seconds)
                if record is not None:
                    records[record.episode_index] = record
                    if on_episode is not None:
                        on_episode(record)
    finally:
        for slot in slots:
            slot.env.close()
    return [records[i] for i in sorted(records)]
