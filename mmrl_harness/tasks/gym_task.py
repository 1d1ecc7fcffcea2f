"""``GymTaskEnv``: any Gymnasium env (or dataset) driven by text, as the task definition says.

It renders the prompt, takes the frame (the observation's image or ``env.render()``), parses the
model's text into an action word, maps the word to an env action, applies the invalid-action
policy and the reward mapping, and enforces ``max_steps``. Nothing here is specific to one env,
which is why a YAML file alone turns any ``rgb_array`` Gymnasium env into a task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import mmrl_harness.envs  # noqa: F401  (registers the mmrl/ ids, quiets headless pygame)
from mmrl_harness.envs.drawing import resize_frame
from mmrl_harness.tasks.env_ids import env_id_problem, registered_id
from mmrl_harness.tasks.episode import Observation, StepInfo, StepResult
from mmrl_harness.tasks.files import Problem, TaskDefinitionError
from mmrl_harness.tasks.parsing import ActionParser
from mmrl_harness.tasks.schema import TaskDefinition

_MIN_FRAME_SIDE = 16  # smaller "images" are symbolic encodings (e.g. MiniGrid's 7x7x3 grid)


def make_task_env(task: TaskDefinition | str) -> GymTaskEnv:
    """A fresh environment instance for a task (a definition, a name, or a YAML path)."""
    if isinstance(task, str):
        from mmrl_harness.tasks.suite import get_task

        task = get_task(task)
    env = _make_env(task)
    try:
        return GymTaskEnv(task, env)
    except Exception:
        env.close()  # the definition does not fit the env; do not leak its resources
        raise


def _fail(
    task: TaskDefinition, field: str, message: str, expected: str = ""
) -> TaskDefinitionError:
    return TaskDefinitionError(
        task.source or f"<task {task.name}>", [Problem(field, message, expected)]
    )


def _make_env(task: TaskDefinition) -> gym.Env[Any, Any]:
    if task.dataset is not None:
        spec = task.dataset.model_dump()
        path = Path(spec["path"]).expanduser()
        if (
            not path.is_absolute()
            and task.source is not None
            and (task.source.parent / path).exists()
        ):
            spec["path"] = str(task.source.parent / path)
        env_id, kwargs, field = "mmrl/DatasetVQA-v0", {**spec, **task.env_kwargs}, "dataset"
    else:
        assert task.env is not None
        # Definitions built in Python skip the loader's check; a module: prefix is accepted only
        # when an earlier opt-in imported it, so Gymnasium itself never imports anything.
        problem = env_id_problem(task.env)
        if problem is not None:
            raise _fail(task, problem.field, problem.message, problem.expected)
        env_id, kwargs, field = registered_id(task.env), dict(task.env_kwargs), "env_kwargs"
    if task.frame != "observation":
        kwargs.setdefault("render_mode", "rgb_array")
    try:
        return gym.make(env_id, disable_env_checker=True, **kwargs)
    except gym.error.Error as err:
        raise _fail(
            task,
            "env",
            f"{type(err).__name__}: {err}",
            "a registered Gymnasium id (gymnasium.pprint_registry() lists them)",
        ) from err
    except ModuleNotFoundError as err:
        raise _fail(task, "env", str(err), "'module:Id' with an importable module") from err
    except (TypeError, ValueError) as err:
        raise _fail(
            task,
            field,
            f"{env_id} rejected its arguments: {err}",
            f"keyword arguments that {env_id} accepts",
        ) from err


def _is_rgb(value: Any) -> bool:
    return (
        isinstance(value, np.ndarray)
        and value.ndim == 3
        and value.shape[-1] in (3, 4)
        and value.dtype == np.uint8
        and min(value.shape[:2]) >= _MIN_FRAME_SIDE
    )


class GymTaskEnv:
    """One environment instance of a task, driven by text (implements ``TaskEnv``)."""

    def __init__(self, task: TaskDefinition, env: gym.Env[Any, Any]):
        self.task = task
        self.env = env
        self._mapping = self._resolve_actions()
        # Fixed from here on; every observation's prompt fields use them.
        self._action_words: tuple[str, ...] = () if self._mapping is None else tuple(self._mapping)
        self._actions_text = " ".join(self._action_words)
        self._parser = ActionParser(task.parser, None if self._mapping is None else self._mapping)
        fallback = task.invalid_action.fallback_action
        self._fallback = None if fallback is None else self._env_action(fallback)
        #: Turns taken, invalid turns, and the task return of the current episode.
        self.steps = 0
        self.invalid_actions = 0
        self.episode_return = 0.0
        self._obs: Any = None
        self._image: np.ndarray | None = None
        self._last_action: Any = None
        self._done = True
        #: Fewest steps that can succeed in this episode, when the env reports it at reset.
        self.optimal_length: int | None = None

    # -- actions -----------------------------------------------------------------------------
    @property
    def action_words(self) -> tuple[str, ...]:
        """The valid action words (empty for free-text answers)."""
        return self._action_words

    @property
    def system_prompt(self) -> str | None:
        """The task's system message, if any, with ``{actions}`` and ``{max_steps}`` filled."""
        template = self.task.system_prompt
        if template is None:
            return None
        fields = {"actions": " ".join(self.action_words), "max_steps": self.task.max_steps}
        try:
            return template.format(**fields)
        except (KeyError, IndexError) as err:
            raise _fail(
                self.task,
                "system_prompt",
                f"the template uses {{{err.args[0]}}}",
                "only {actions} and {max_steps} (the prompt has the per-turn fields)",
            ) from None

    def _resolve_actions(self) -> dict[str, Any] | None:
        space = self.env.action_space
        env_words: tuple[str, ...] = tuple(getattr(self.env.unwrapped, "action_words", ()))
        if self.task.actions is None:
            if env_words:
                return {w: i for i, w in enumerate(env_words)}
            if isinstance(space, gym.spaces.Text):
                return None  # free-text answers: the parsed text is the action
            raise _fail(
                self.task,
                "actions",
                f"{self.task.env_label} has action space {space} and names no action words",
                "a mapping like {left: 0, right: 1}",
            )
        mapping: dict[str, Any] = {}
        for word, value in self.task.actions.items():
            if isinstance(value, str) and not isinstance(space, gym.spaces.Text):
                if value not in env_words:
                    raise _fail(
                        self.task,
                        f"actions.{word}",
                        f"{value!r} is not an action word of {self.task.env_label}",
                        f"one of {list(env_words)} or an int",
                    )
                value = env_words.index(value)
            elif isinstance(value, list):
                value = np.asarray(value, dtype=space.dtype)
            if not space.contains(value):
                raise _fail(
                    self.task,
                    f"actions.{word}",
                    f"{value!r} is not in the action space {space} of {self.task.env_label}",
                    "a valid env action",
                )
            mapping[word] = value
        self._check_discrete_coverage(mapping, env_words)
        return mapping

    def _check_discrete_coverage(self, mapping: dict[str, Any], env_words: tuple[str, ...]) -> None:
        """Every action of a Discrete space needs a word, or the policy can never take it.

        Envs that name their actions (``action_words``) may be given a deliberate subset, e.g. a
        navigation task that leaves out MiniGrid's pickup/drop/toggle/done.
        """
        space = self.env.action_space
        if not isinstance(space, gym.spaces.Discrete) or env_words:
            return
        mapped = {int(v) for v in mapping.values()}
        missing = [
            a for a in range(int(space.start), int(space.start + space.n)) if a not in mapped
        ]
        if missing:
            raise _fail(
                self.task,
                "actions",
                f"no word maps to action(s) {missing} of {self.task.env_label} ({space})",
                f"a word for every action {int(space.start)}..{int(space.start + space.n) - 1}",
            )

    def _env_action(self, word: str) -> Any:
        return word if self._mapping is None else self._mapping[word]

    def oracle(self) -> str | None:
        """The text a scripted policy would say now (optimal where one exists), if the env has one."""
        scripted = getattr(self.env.unwrapped, "oracle_action", None)
        if scripted is None or self._done:
            return None
        try:
            action = scripted()
        except NotImplementedError:
            return None
        if self._mapping is None:
            return str(action)
        return next((w for w, v in self._mapping.items() if np.array_equal(v, action)), None)

    # -- episode -----------------------------------------------------------------------------
    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> Observation:
        """Start an episode; the same seed gives identical images and text."""
        self._obs, info = self.env.reset(seed=seed, options=options)
        # Envs that know the shortest successful episode say so at reset (NumberLine does).
        optimal = info.get("optimal_length") if isinstance(info, dict) else None
        self.optimal_length = int(optimal) if optimal is not None else None
        self.steps, self.invalid_actions, self.episode_return = 0, 0, 0.0
        self._last_action, self._done = None, False
        self._image = self._frame(self._obs)
        return self._observation()

    def step(self, text: str) -> StepResult:
        """Parse ``text``, act, and score the turn per the task's rules."""
        if self._done:
            raise RuntimeError(f"the {self.task.name} episode is over; call reset(seed) first")
        task, spec = self.task, self.task.invalid_action
        word = self._parser(text)
        valid = word is not None
        env_action: Any = None
        if word is not None:
            env_action = self._last_action = self._env_action(word)
        else:
            self.invalid_actions += 1
            if spec.policy == "repeat_last":
                env_action = self._last_action if self._last_action is not None else self._fallback
        terminated = truncated = False
        env_reward, reward = 0.0, 0.0
        env_info: dict[str, Any] = {}
        event: str | None = "invalid_action"
        if env_action is not None:
            self._obs, raw, terminated, truncated, env_info = self.env.step(env_action)
            env_reward = float(raw)
            event = env_info.get("event") if isinstance(env_info.get("event"), str) else None
            if event is not None and event in task.reward.events:
                reward = task.reward.events[event]
            else:
                reward = task.reward.scale * env_reward + task.reward.offset
            self._image = self._frame(self._obs)
        if not valid:
            reward += spec.penalty
            terminated = terminated or spec.policy == "end_episode"
        self.steps += 1
        self.episode_return += reward
        if task.kind == "single_turn":
            terminated = True  # one answer per episode, right, wrong or unparseable
        truncated = truncated or (not terminated and self.steps >= task.max_steps)
        self._done = terminated or truncated
        success = bool(env_info.get(task.success.info_key, False))
        if self._done and task.success.min_return is not None:
            success = success or self.episode_return >= task.success.min_return
        if not valid and spec.policy == "end_episode":
            success = False  # a forfeited episode never counts, whatever it earned before
        info = StepInfo(valid, word, env_action, success, event, env_reward, dict(env_info))
        return StepResult(
            self._observation(), float(reward), bool(terminated), bool(truncated), info
        )

    def close(self) -> None:
        """Release the environment."""
        self.env.close()

    # -- observation -------------------------------------------------------------------------
    def _frame(self, obs: Any) -> np.ndarray:
        mode = self.task.frame
        frame: Any = None
        if mode != "render":
            candidate = obs.get("image") if isinstance(obs, dict) else obs
            if _is_rgb(candidate):
                frame = candidate
            elif mode == "observation":
                raise _fail(
                    self.task,
                    "frame",
                    f"the observation of {self.task.env_label} holds no RGB image",
                    "frame: render (draw with env.render())",
                )
        if frame is None:
            frame = self.env.render()
            if not isinstance(frame, np.ndarray) or frame.ndim not in (2, 3):
                raise _fail(
                    self.task,
                    "frame",
                    f"{self.task.env_label}.render() returned "
                    f"{type(frame).__name__}, not an rgb_array frame",
                    "an env that supports render_mode='rgb_array'",
                )
        if frame.ndim == 2:
            frame = np.stack([frame] * 3, axis=-1)
        # Always a copy: some envs reuse their frame buffer, which would rewrite past observations.
        frame = np.array(frame[..., :3], dtype=np.uint8)
        return resize_frame(frame, self.task.image_size)

    def _observation(self) -> Observation:
        fields: dict[str, Any] = {
            "obs": self._obs,
            "text": "",
            "step": self.steps,
            "max_steps": self.task.max_steps,
            "actions": self._actions_text,
        }
        if isinstance(self._obs, dict):
            fields.update(
                {
                    k: v
                    for k, v in self._obs.items()
                    if isinstance(v, (str, int, float, np.integer, np.floating))
                }
            )
        try:
            text = self.task.prompt.format(**fields)
        except (KeyError, IndexError) as err:
            raise _fail(
                self.task,
                "prompt",
                f"the template uses {{{err.args[0]}}}, which "
                f"{self.task.env_label} does not provide",
                f"fields among {{{'}, {'.join(sorted(fields))}}}",
            ) from None
        assert self._image is not None
        return Observation(self._image, text, self.steps)
