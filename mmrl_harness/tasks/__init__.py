"""Tasks: the definition schema, the YAML loader, the suite listing, and the episode model.

Importing this package is cheap (PyYAML only), so listing tasks never pays for pydantic,
Gymnasium, numpy or PIL; the rest of the public API below loads on first use.

- listing: ``list_tasks()``, ``get_task(name)``, ``load_task_file(path)``, ``to_yaml(task)``
- schema: ``TaskDefinition`` and its blocks; ``TaskDefinitionError`` names file, field, form
- episodes: ``make_task_env(task) -> GymTaskEnv`` with ``reset(seed) -> Observation`` and
  ``step(text) -> StepResult``; ``TaskEnv`` is the protocol the rollout engine consumes
- plugins: ``TaskFolder``, ``task_factory``, ``BUILTIN_SUITE`` (entry point group
  ``mmrl_harness.tasks``)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mmrl_harness.tasks.files import Problem, TaskDefinitionError, UnknownTaskError
from mmrl_harness.tasks.suite import (
    BUILTIN_SUITE,
    TaskFolder,
    TaskSummary,
    builtin_suite_dir,
    get_task,
    list_tasks,
    task_factory,
    validate_plugin,
)

if TYPE_CHECKING:
    from mmrl_harness.tasks.episode import Observation, StepInfo, StepResult, TaskEnv
    from mmrl_harness.tasks.gym_task import GymTaskEnv, make_task_env
    from mmrl_harness.tasks.loader import load_task_file, task_from_dict, to_yaml, with_overrides
    from mmrl_harness.tasks.schema import (
        DatasetSource,
        EvalSeeds,
        InvalidActionSpec,
        ParserSpec,
        RewardSpec,
        SuccessSpec,
        TaskDefinition,
    )

# name -> module; resolved on first use so that listing stays light.
_LAZY = {
    **dict.fromkeys(
        ("Observation", "StepInfo", "StepResult", "TaskEnv"), "mmrl_harness.tasks.episode"
    ),
    **dict.fromkeys(("GymTaskEnv", "make_task_env"), "mmrl_harness.tasks.gym_task"),
    **dict.fromkeys(
        ("load_task_file", "task_from_dict", "to_yaml", "with_overrides"),
        "mmrl_harness.tasks.loader",
    ),
    **dict.fromkeys(
        (
            "DatasetSource",
            "EvalSeeds",
            "InvalidActionSpec",
            "ParserSpec",
            "RewardSpec",
            "SuccessSpec",
            "TaskDefinition",
        ),
        "mmrl_harness.tasks.schema",
    ),
}

__all__ = [
    "BUILTIN_SUITE",
    "DatasetSource",
    "EvalSeeds",
    "GymTaskEnv",
    "InvalidActionSpec",
    "Observation",
    "ParserSpec",
    "Problem",
    "RewardSpec",
    "StepInfo",
    "StepResult",
    "SuccessSpec",
    "TaskDefinition",
    "TaskDefinitionError",
    "TaskEnv",
    "TaskFolder",
    "TaskSummary",
    "UnknownTaskError",
    "builtin_suite_dir",
    "get_task",
    "list_tasks",
    "load_task_file",
    "make_task_env",
    "task_factory",
    "task_from_dict",
    "to_yaml",
    "validate_plugin",
    "with_overrides",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mmrl_harness.tasks' has no attribute {name!r}")
