"""The task definition schema: what one YAML file in ``tasks/`` may say, field by field.

Every field carries a description: it is the documentation, and the "expected" line of a
``TaskDefinitionError``. Unknown keys are errors (``extra="forbid"``), so a misspelt key never
silently falls back to a default. Imports only pydantic, so listing tasks stays fast.
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

DEFAULT_METRICS = ("episode_return", "success_rate", "episode_length", "invalid_action_rate")
_NAME = r"^[a-z0-9][a-z0-9_.-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


class DatasetSource(_Strict):
    """A ``datasets`` dataset that backs a single-turn question-answering task."""

    path: str = Field(
        description="a Hub dataset id, a folder written by Dataset.save_to_disk, "
        "or a .parquet/.json/.jsonl/.csv file (relative paths are tried next to "
        "the YAML file first)"
    )
    name: str | None = Field(None, description="the dataset configuration name, if it has several")
    split: str = Field("test", description="the split to read")
    image_column: str = Field("image", description="column holding the image")
    question_column: str = Field("question", description="column holding the question text")
    answer_column: str = Field(
        "answer",
        description="column holding the answer: a string, a "
        "number, or a list of acceptable answers",
    )


class ParserSpec(_Strict):
    """How the model's text becomes an action word."""

    kind: Literal["first_word", "first_action", "exact", "regex"] = Field(
        "first_word",
        description="first_word: the text's first word; first_action: the first word that is a "
        "key of `actions` (lenient, for chatty models); exact: the whole text, trimmed; regex: "
        "the first match of `pattern` (its group 1 when it has a group)",
    )
    pattern: str | None = Field(None, description="a Python regular expression (kind regex only)")
    case_sensitive: bool = Field(False, description="compare words without lower-casing")

    @model_validator(mode="after")
    def _pattern_fits_kind(self) -> ParserSpec:
        if self.kind == "regex":
            if not self.pattern:
                raise ValueError("pattern: kind regex needs a `pattern`")
            try:
                compiled = re.compile(self.pattern)
            except re.error as err:
                raise ValueError(f"pattern: {self.pattern!r} is not a valid regex: {err}") from None
            if compiled.groups > 1:
                raise ValueError(
                    f"pattern: {self.pattern!r} has {compiled.groups} groups; use 0 or 1"
                )
        elif self.pattern is not None:
            raise ValueError(f"pattern: only used with kind regex, not {self.kind}")
        return self


class InvalidActionSpec(_Strict):
    """What happens when the text parses to no valid action."""

    policy: Literal["penalize", "repeat_last", "end_episode"] = Field(
        "penalize",
        description="penalize: the env does not move and the turn counts; repeat_last: the env "
        "repeats the last valid action (or `fallback_action` before any); end_episode: the "
        "episode ends unsuccessfully",
    )
    penalty: float = Field(0.0, description="reward added on every invalid action (e.g. -1)")
    fallback_action: str | None = Field(
        None,
        description="repeat_last only: the action word used when there is no last action "
        "yet (a no-op such as `stay`); without it such a turn is handled as penalize",
    )


class RewardSpec(_Strict):
    """How the environment's reward becomes the task's reward (valid actions only)."""

    scale: float = Field(1.0, description="reward = scale * env_reward + offset")
    offset: float = Field(0.0, description="reward = scale * env_reward + offset")
    events: dict[str, float] = Field(
        default_factory=dict,
        description="event name -> reward that replaces the scaled reward when the env reports "
        "that event in info['event'] (built-ins: goal, progress, no_progress, win, loss, bust, "
        "draw, card, move, correct, wrong)",
    )


class SuccessSpec(_Strict):
    """When an episode counts as a success."""

    info_key: str = Field(
        "success",
        description="a step whose env info has this key truthy "
        "is a success (the built-in envs set info['success'])",
    )
    min_return: float | None = Field(
        None,
        description="also a success when the episode ends "
        "with a task return at least this (for envs without the key)",
    )


class EvalSeeds(_Strict):
    """The seeds evaluation runs one episode each on; a YAML list is also accepted."""

    start: int = Field(
        10_000,
        description="first seed of a consecutive range (kept away from "
        "0 so training seeds starting at 0 never overlap)",
    )
    count: int = Field(100, ge=1, description="number of consecutive seeds")
    values: list[int] | None = Field(None, description="explicit seeds; replaces start/count")

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, data: Any) -> Any:
        return {"values": data} if isinstance(data, list) else data

    def seeds(self) -> list[int]:
        """The seeds, in order."""
        return (
            list(self.values)
            if self.values is not None
            else list(range(self.start, self.start + self.count))
        )


class TaskDefinition(_Strict):
    """One task: which environment or dataset, the prompt, how text becomes an action, the reward,
    episode limits, evaluation seeds and metrics."""

    #: A ``TaskDefinition`` is itself a valid ``mmrl_harness.tasks`` plugin object.
    plugin_api_version: ClassVar[int] = 1

    name: str = Field(
        pattern=_NAME,
        description="unique task name: lower case letters, digits, "
        "'_', '-', '.' (defaults to the file name; never inherited by include)",
    )
    description: str = Field("", description="what the task asks of the agent, one paragraph")
    version: str = Field("1", description="bump when a change makes old scores incomparable")
    kind: Literal["single_turn", "multi_turn"] = Field(
        description="single_turn: one observation, one answer (max_steps 1); multi_turn: an "
        "episode of up to max_steps turns"
    )
    tags: list[str] = Field(default_factory=list, description="free labels for grouping tasks")
    env: str | None = Field(
        None,
        description="a Gymnasium id: a built-in like "
        "'mmrl/NumberLine-v0' or any registered id like 'FrozenLake-v1' "
        "('module:Id' imports the module first); give env or dataset",
    )
    dataset: DatasetSource | None = Field(
        None,
        description="a dataset block instead of env: "
        "{path, split, image_column, question_column, "
        "answer_column}",
    )
    env_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="keyword arguments for the env: difficulty and data parameters such as "
        "line_length, size, max_objects, image_size, noise",
    )
    frame: Literal["auto", "observation", "render"] = Field(
        "auto",
        description="where the image comes from: observation (obs['image'] or a pixel "
        "observation), render (env.render() in rgb_array mode), or auto (observation when it "
        "holds an RGB image, else render)",
    )
    image_size: int | None = Field(
        None,
        ge=8,
        description="resize every frame to this square side in pixels; None keeps the env's size",
    )
    system_prompt: str | None = Field(
        None,
        description="a system message for chat models; may use {actions} and {max_steps}",
    )
    prompt: str = Field(
        "{text}",
        description="the user prompt, a str.format template over {text} (the env's text), {obs} "
        "(the raw observation), the observation dict's scalar keys, {step}, {max_steps} and "
        "{actions} (the action words joined by spaces)",
    )
    actions: dict[str, Any] | None = Field(
        None,
        description="action word -> env action (an int, a list of numbers, or one of the "
        "env's own action words); defaults to the built-in env's words; free-text envs (datasets) "
        "need none",
    )
    parser: ParserSpec = Field(
        default_factory=ParserSpec,  # type: ignore[arg-type]
        description="how text becomes an action word",
    )
    invalid_action: InvalidActionSpec = Field(
        default_factory=InvalidActionSpec,  # type: ignore[arg-type]
        description="what an unparseable turn does",
    )
    reward: RewardSpec = Field(
        default_factory=RewardSpec,  # type: ignore[arg-type]
        description="how env rewards map to task rewards",
    )
    success: SuccessSpec = Field(
        default_factory=SuccessSpec,  # type: ignore[arg-type]
        description="when an episode counts as a success",
    )
    max_steps: int = Field(
        1,
        ge=1,
        description="turns per episode before truncation "
        "(1 for single_turn; required for multi_turn)",
    )
    eval_seeds: EvalSeeds = Field(
        default_factory=EvalSeeds,  # type: ignore[arg-type]
        description="{start, count} or a list of seeds for evaluation",
    )
    metrics: list[str] = Field(
        default_factory=lambda: list(DEFAULT_METRICS),
        description="metrics computed from the episode records; the "
        "first is the task's primary metric",
    )

    _source: Path | None = PrivateAttr(None)

    @property
    def source(self) -> Path | None:
        """The YAML file this definition was loaded from (None when built in Python)."""
        return self._source

    @field_validator("prompt", "system_prompt")
    @classmethod
    def _template_parses(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                list(string.Formatter().parse(value))
            except ValueError as err:
                raise ValueError(
                    f"not a valid str.format template ({err}); write literal "
                    "braces as '{{' and '}}'"
                ) from None
        return value

    @field_validator("actions")
    @classmethod
    def _action_values(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("`actions` is empty; map at least one word to an env action")
        for word, action in value.items():
            ok = isinstance(action, (int, str)) and not isinstance(action, bool)
            ok = ok or (
                isinstance(action, list)
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in action)
            )
            if not ok or not re.fullmatch(r"\S+", word):
                raise ValueError(
                    f"actions[{word!r}] = {action!r}: expected a single word mapped "
                    "to an int, a list of numbers, or an env action word"
                )
        return value

    @field_validator("metrics")
    @classmethod
    def _metric_names(cls, value: list[str]) -> list[str]:
        bad = [m for m in value if not re.fullmatch(r"[a-z_][a-z0-9_/@.]*", m)]
        if bad or not value:
            raise ValueError(f"metric names must be non-empty snake_case; got {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TaskDefinition:
        # Messages start with "field: " so the loader can name the field (pydantic gives a
        # whole-model check no location).
        if (self.env is None) == (self.dataset is None):
            raise ValueError(
                "env: give exactly one of `env` (a Gymnasium id) or `dataset` (a block)"
            )
        if self.kind == "single_turn" and self.max_steps != 1:
            raise ValueError(
                f"max_steps: single_turn tasks have max_steps 1, not {self.max_steps}; use "
                "kind multi_turn for longer episodes"
            )
        if self.kind == "multi_turn" and "max_steps" not in self.model_fields_set:
            raise ValueError(
                "max_steps: multi_turn tasks need `max_steps` (the episode step limit)"
            )
        if self.dataset is not None and self.kind != "single_turn":
            raise ValueError("kind: dataset tasks are single_turn")
        fallback = self.invalid_action.fallback_action
        if fallback is not None and self.actions is not None and fallback not in self.actions:
            raise ValueError(
                f"invalid_action.fallback_action: {fallback!r} is not a key of "
                f"`actions` ({', '.join(self.actions)})"
            )
        return self

    @property
    def env_label(self) -> str:
        """The env id, or ``dataset:<path>`` for dataset tasks (for listings)."""
        return self.env if self.env is not None else f"dataset:{self.dataset.path}"  # type: ignore[union-attr]
