"""The episode model every task shares: ``reset(seed) -> Observation``, ``step(text) -> StepResult``.

A single-turn task is an episode of length one. The rollout engine, metrics and results consume
only these types, so any object satisfying ``TaskEnv`` (not just Gymnasium-backed ones) can be
evaluated. Light on purpose: no numpy/PIL import at runtime.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from mmrl_harness.tasks.schema import TaskDefinition


@dataclass(frozen=True)
class Observation:
    """What the policy sees at one turn."""

    image: np.ndarray  # uint8, shape (H, W, 3)
    text: str  # the rendered prompt (the task's template filled with this turn's fields)
    step: int  # turns taken before this observation (0 after reset)

    def to_pil(self) -> Image.Image:
        """The image as a PIL image (what Hugging Face processors take)."""
        from PIL import Image

        return Image.fromarray(self.image)


@dataclass(frozen=True)
class StepInfo:
    """What happened at one turn, beyond the reward."""

    action_is_valid: bool  # the text parsed to an action of the task
    action: str | None  # the action word parsed from the text (None when invalid)
    env_action: Any  # what the env was stepped with (None when it was not stepped)
    success: bool  # the episode has succeeded (true at its final step only)
    event: str | None  # the env's event name (e.g. "goal"), or "invalid_action"
    env_reward: float  # the env's own reward, before the task's reward mapping (0 if not stepped)
    env_info: dict[str, Any] = field(default_factory=dict)  # the env's info dict, untouched


@dataclass(frozen=True)
class StepResult:
    """The outcome of one turn, Gymnasium-style."""

    observation: Observation  # the next observation (the last one again once the episode ended)
    reward: float  # the task's reward for this turn
    terminated: bool  # the episode ended by the task's rules (goal, answer, end_episode policy)
    truncated: bool  # the episode hit max_steps (or the env's own time limit)
    info: StepInfo

    @property
    def done(self) -> bool:
        """The episode is over (terminated or truncated)."""
        return self.terminated or self.truncated


@runtime_checkable
class TaskEnv(Protocol):
    """One environment instance of a task, driven by text."""

    task: TaskDefinition

    @property
    def action_words(self) -> tuple[str, ...]:
        """The valid action words (empty for free-text answers), for constrained policies."""
        ...

    @property
    def system_prompt(self) -> str | None:
        """The task's system message for chat models, if any."""
        ...

    def reset(self, seed: int | None = None) -> Observation:
        """Start an episode; the same seed gives the same episode."""
        ...

    def step(self, text: str) -> StepResult:
        """Act with the model's text for this turn."""
        ...

    def close(self) -> None:
        """Release the environment."""
        ...
