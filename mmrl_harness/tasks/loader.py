"""Validate task definitions with pydantic: from YAML files, from mappings, with overrides; and
turn pydantic's errors into ``TaskDefinitionError``s that name the file, the field (dotted path)
and the expected form (the field's description).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mmrl_harness.config_io import apply_overrides, problems_from
from mmrl_harness.tasks.files import TaskDefinitionError, read_yaml
from mmrl_harness.tasks.schema import TaskDefinition

__all__ = ["load_task_file", "problems_from", "task_from_dict", "to_yaml", "with_overrides"]


# -- validation ------------------------------------------------------------------------------
def task_from_dict(
    data: Mapping[str, Any],
    source: str | Path | None = None,
    *,
    allow_env_imports: bool = False,
) -> TaskDefinition:
    """Validate a mapping as a ``TaskDefinition``; errors become a ``TaskDefinitionError``.

    The env id must be registered with Gymnasium; ``allow_env_imports`` lets a ``module:Id`` id
    import its module first, which runs that module's code (see ``tasks.env_ids``).
    """
    try:
        task = TaskDefinition.model_validate(dict(data))
    except ValidationError as err:
        raise TaskDefinitionError(source, problems_from(err, TaskDefinition)) from None
    if task.env is not None:
        from mmrl_harness.tasks.env_ids import env_id_problem  # imports Gymnasium

        problem = env_id_problem(task.env, allow_imports=allow_env_imports)
        if problem is not None:
            raise TaskDefinitionError(source, [problem])
    if source is not None and not str(source).startswith("<"):
        task._source = Path(source)
    return task


def load_task_file(path: str | Path, *, allow_env_imports: bool = False) -> TaskDefinition:
    """Load one task YAML file (``name`` defaults to the file's stem)."""
    path = Path(path)
    data = read_yaml(path)
    data.setdefault("name", path.stem)
    return task_from_dict(data, path, allow_env_imports=allow_env_imports)


def with_overrides(task: TaskDefinition, overrides: Mapping[str, Any]) -> TaskDefinition:
    """A copy of ``task`` with dotted fields replaced, re-validated.

    ``with_overrides(t, {"env_kwargs.line_length": 9, "max_steps": 30})`` is how sweeps vary
    difficulty without writing a YAML per point.
    """
    data = task.model_dump(exclude_unset=True)
    data.setdefault("name", task.name)
    data = apply_overrides(data, overrides, task.source or task.name, TaskDefinitionError)
    updated = task_from_dict(data, f"{task.source or task.name} (overrides)")
    updated._source = task.source
    return updated


def to_yaml(task: TaskDefinition) -> str:
    """The fully resolved definition (includes merged, defaults filled) as YAML."""
    data = task.model_dump(mode="json")
    if task.eval_seeds.values is None:
        data["eval_seeds"].pop("values")
    data = {k: v for k, v in data.items() if not (k in ("env", "dataset") and v is None)}
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
