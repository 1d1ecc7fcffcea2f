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
from typing import TYPE_CHECKING, Literal, Protocol

from mmrl_harness.errors import InputError
from mmrl_harness.results import EpisodeRecord
from mmrl_harness.tasks.episode import Observation, TaskEnv

if TYPE_CHECKING:
    import torch
    from transformers import BatchFeature

    from mmrl_harness.models.loading import LoadedVLM

PolicyMode = Literal["generate", "action_logits"]


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
    """A loaded VLM as a policy.

    ``mode="generate"`` decodes free text that the task parses (any task). ``mode="action_logits"``
    scores only the action words at the answer position and picks one (greedy or sampled from a
    softmax over those logits) — the policy head the episodic trainers optimise, and a much
    stronger baseline for tasks with a small discrete action set.
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

    def reseed(self) -> None:
        """Reset the sampling RNG (called at the start of every rollout)."""
        import torch

        torch.manual_seed(self.seed)

    def act(
        self, observations: Sequence[Observation], action_words: Sequence[str]
    ) -> list[PolicyOutput]:
        """Answer every observation with one batched forward (or one batched generate)."""
        from mmrl_harness.models.generation import build_inputs

        inputs = build_inputs(
            self.loaded, [o.to_pil() for o in observations], [o.text for o in observations]
        )
        if self.mode == "action_logits":
            return self._act_logits(inputs, action_words)
        return self._act_generate(inputs)

    def _act_generate(self, inputs: BatchFeature) -> list[PolicyOutput]:
        from mmrl_harness.models.generation import decode_answers, generate_ids

        kwargs = {"temperature": self.temperature} if self.do_sample else {}
        new_ids = generate_ids(
            self.loaded,
            inputs,
            max_new_tokens=self.max_new_tokens,
            do_sample=self.do_sample,
            **kwargs,
        )
        pad = self.loaded.tokenizer.pad_token_id
        counts = (new_ids != pad).sum(dim=1).tolist()
        texts = decode_answers(self.loaded, new_ids)
        return [PolicyOutput(t, int(n)) for t, n in zip(texts, counts, strict=True)]

    def action_scores(self, inputs: BatchFeature, action_words: Sequence[str]) -> torch.Tensor:
        """``(batch, len(action_words))`` logits of the action words at the answer position."""
        import torch

        from mmrl_harness.models.generation import add_position_ids

        ids = action_token_ids(self.loaded, action_words)
        with torch.no_grad():
            out = self.loaded.model(**add_position_ids(self.loaded, dict(inputs)))
        return out.logits[:, -1, ids].float()  # type: ignore[no-any-return]

    def _act_logits(self, inputs: BatchFeature, action_words: Sequence[str]) -> list[PolicyOutput]:
        import torch

        scores = self.action_scores(inputs, action_words) / self.temperature
        if self.do_sample:
            picks = torch.multinomial(torch.softmax(scores, dim=-1), 1).squeeze(1)
        else:
            picks = scores.argmax(dim=-1)
        return [PolicyOutput(action_words[int(i)], 1) for i in picks.tolist()]


def action_token_ids(loaded: LoadedVLM, action_words: Sequence[str]) -> list[int]:
    """The single token id of each action word; an error when a word is not exactly one token."""
    if not action_words:
        raise ValueError(
            "policy mode 'action_logits' needs a task with action words (a multi-turn task or a "
            "single-turn task with an `actions:` list); use mode 'generate' for free-text answers"
        )
    tokenizer = loaded.tokenizer
    ids = []
    for word in action_words:
        pieces = tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(pieces) != 1 or pieces[0] == tokenizer.unk_token_id:
            raise ValueError(
                f"action word {word!r} is {len(pieces)} token(s) {pieces} for this tokenizer; "
                "policy mode 'action_logits' needs every action word to be one known token "
                "(use mode 'generate')"
            )
        ids.append(int(pieces[0]))
    return ids


@dataclass
class _Slot:
    """One environment and the episode it is running."""

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
    slots = [_Slot(make_env()) for _ in range(min(batch_size, len(seeds)))]
    records: dict[int, EpisodeRecord] = {}
    try:
        while pending or any(s.observation is not None for s in slots):
            for slot in slots:
                if slot.observation is None and pending:
                    _start(slot, *pending.pop())
            active = [s for s in slots if s.observation is not None]
            started = time.perf_counter()
            outputs = policy.act([s.observation for s in active], active[0].env.action_words)  # type: ignore[misc]
            share = (time.perf_counter() - started) / len(active)
            for slot, out in zip(active, outputs, strict=True):
                record = _step(slot, out, share)
                if record is not None:
                    records[record.episode_index] = record
                    if on_episode is not None:
                        on_episode(record)
    finally:
        for slot in slots:
            slot.env.close()
    return [records[i] for i in sorted(records)]


def _start(slot: _Slot, index: int, seed: int) -> None:
    started = time.perf_counter()
    slot.index, slot.seed = index, seed
    slot.actions, slot.responses, slot.rewards = [], [], []
    slot.invalid, slot.tokens = 0, 0
    slot.observation = slot.env.reset(seed=seed)
    slot.seconds = time.perf_counter() - started


def _step(slot: _Slot, out: PolicyOutput, policy_seconds: float) -> EpisodeRecord | None:
    started = time.perf_counter()
    result = slot.env.step(out.text)
    slot.responses.append(out.text)
    slot.actions.append(result.info.action or "")
    slot.rewards.append(result.reward)
    slot.invalid += not result.info.action_is_valid
    slot.tokens += out.tokens
    slot.seconds += policy_seconds + time.perf_counter() - started
    if not result.done:
        slot.observation = result.observation
        return None
    slot.observation = None
    return EpisodeRecord(
        task=slot.env.task.name,
        seed=slot.seed,
        episode_index=slot.index,
        actions=slot.actions,
        responses=slot.responses,
        rewards=slot.rewards,
        episode_return=float(sum(slot.rewards)),
        length=len(slot.rewards),
        success=result.info.success,
        invalid_actions=slot.invalid,
        truncated=result.truncated and not result.terminated,
        tokens=slot.tokens,
        wall_time_s=slot.seconds,
    )
