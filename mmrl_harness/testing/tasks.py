"""Contract checks for a task: seeding, determinism, the action map, and the oracle if any.

``check_task`` builds fresh environment instances of the task (``make_task_env``) and checks:

- ``loads``: the definition resolves and validates, and an environment can be made;
- ``seeding``: ``reset(seed)`` on two fresh instances gives the same frame (``uint8 (H, W, 3)``)
  and the same prompt text;
- ``determinism``: the same seed and the same answers give the same episode (frames, text,
  rewards, ends);
- ``action_map``: every action word, said alone, parses to itself and steps the env; an empty
  answer is invalid (free-text tasks: any text is an answer, so this check only notes that);
- ``oracle``: where the env has a scripted policy, each of its answers is a valid action and its
  episodes end within ``max_steps`` (the success rate is reported).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmrl_harness.testing.report import ContractReport

if TYPE_CHECKING:
    from mmrl_harness.tasks.episode import Observation
    from mmrl_harness.tasks.gym_task import GymTaskEnv
    from mmrl_harness.tasks.schema import TaskDefinition

TASK_CHECKS = ("loads", "seeding", "determinism", "action_map", "oracle")


def check_task(
    task: str | Path | TaskDefinition,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    allow_env_imports: bool = False,
    raise_on_failure: bool = True,
) -> ContractReport:
    """Run the task contract checks on ``task`` (a name, a YAML path, or a definition).

    Raises ``ContractViolation`` listing the failures (unless ``raise_on_failure=False``);
    returns the report. ``allow_env_imports`` lets a ``module:Id`` env import its module.
    """
    label = task if isinstance(task, (str, Path)) else task.name
    report = ContractReport(f"task {str(label)!r}")
    found: list[TaskDefinition] = []

    def load() -> str:
        definition = _definition(task, allow_env_imports)
        _make(definition).close()
        found.append(definition)
        return f"{definition.kind}, env {definition.env_label}"

    if report.run("loads", load).passed:
        definition = found[0]
        report.run("seeding", lambda: _check_seeding(definition, seeds))
        report.run("determinism", lambda: _check_determinism(definition, seeds[0]))
        report.run("action_map", lambda: _check_action_map(definition, seeds[0]))
        report.run("oracle", lambda: _check_oracle(definition, seeds))
    if raise_on_failure:
        report.raise_for_failures()
    return report


def _definition(task: str | Path | TaskDefinition, allow_env_imports: bool) -> TaskDefinition:
    from mmrl_harness.tasks.loader import load_task_file
    from mmrl_harness.tasks.suite import get_task

    if isinstance(task, Path):
        return load_task_file(task, allow_env_imports=allow_env_imports)
    if isinstance(task, str):
        return get_task(task, allow_env_imports=allow_env_imports)
    return task


def _make(task: TaskDefinition) -> GymTaskEnv:
    from mmrl_harness.tasks.gym_task import make_task_env

    return make_task_env(task)


def _same(a: Observation, b: Observation) -> bool:
    import numpy as np

    return a.text == b.text and np.array_equal(a.image, b.image)


def _check_seeding(task: TaskDefinition, seeds: Sequence[int]) -> str:
    for seed in seeds:
        first, second = _make(task), _make(task)
        try:
            a, b = first.reset(seed=seed), second.reset(seed=seed)
        finally:
            first.close()
            second.close()
        image = a.image
        assert image.dtype.name == "uint8" and image.ndim == 3 and image.shape[2] == 3, (
            f"reset(seed={seed}) gave a frame of dtype {image.dtype} and shape {image.shape}; "
            "expected uint8 (H, W, 3)"
        )
        assert _same(a, b), (
            f"two fresh environments reset with seed {seed} show different frames or prompts: "
            "draw every random choice from the env's self.np_random (seeded by reset)"
        )
    return f"{len(seeds)} seed(s)"


def _answers(env: GymTaskEnv) -> str:
    """The next answer of a fixed policy: the oracle's, else the action words in turn."""
    oracle = env.oracle()
    if oracle is not None:
        return oracle
    words = env.action_words
    return words[env.steps % len(words)] if words else "answer"


def _episode(task: TaskDefinition, seed: int) -> list[tuple[Any, ...]]:
    env = _make(task)
    try:
        obs = env.reset(seed=seed)
        trace: list[tuple[Any, ...]] = [(obs.text, obs.image.tobytes())]
        for _ in range(task.max_steps + 1):
            result = env.step(_answers(env))
            o = result.observation
            trace.append((o.text, o.image.tobytes(), result.reward, result.done))
            if result.done:
                return trace
    finally:
        env.close()
    raise AssertionError(f"an episode did not end within max_steps={task.max_steps} turns")


def _check_determinism(task: TaskDefinition, seed: int) -> str:
    first, second = _episode(task, seed), _episode(task, seed)
    assert first == second, (
        f"two episodes with seed {seed} and the same answers differ (first at turn "
        f"{next(i for i, (a, b) in enumerate(zip(first, second, strict=False)) if a != b)}): "
        "the env must depend on nothing but its seed and the actions"
    )
    return f"{len(first) - 1} turn(s)"


def _check_action_map(task: TaskDefinition, seed: int) -> str:
    probe = _make(task)
    words = probe.action_words
    probe.close()
    if not words:
        return "free-text answers: no action words to check"
    for word in words:
        env = _make(task)
        try:
            env.reset(seed=seed)
            info = env.step(word).info
        finally:
            env.close()
        assert info.action_is_valid and info.action == word, (
            f"the answer {word!r} parsed to {info.action!r} (valid: {info.action_is_valid}); "
            "every action word said alone must parse to itself"
        )
    env = _make(task)
    try:
        env.reset(seed=seed)
        empty = env.step("").info
    finally:
        env.close()
    assert not empty.action_is_valid, f"an empty answer parsed to the action {empty.action!r}"
    return f"{len(words)} action word(s)"


def _check_oracle(task: TaskDefinition, seeds: Sequence[int]) -> str:
    successes = 0
    for seed in seeds:
        env = _make(task)
        try:
            env.reset(seed=seed)
            if env.oracle() is None:
                return "no scripted policy"
            for _ in range(task.max_steps + 1):
                answer = env.oracle()
                assert answer is not None, "the oracle stopped answering before the episode ended"
                result = env.step(answer)
                assert result.info.action_is_valid, (
                    f"the oracle's answer {answer!r} (seed {seed}) is not a valid action"
                )
                if result.done:
                    successes += result.info.success
                    break
            else:
                raise AssertionError(f"the oracle's episode (seed {seed}) did not end")
        finally:
            env.close()
    return f"oracle succeeded on {successes}/{len(seeds)} seed(s)"
