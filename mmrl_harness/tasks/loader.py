"""Validate task definitions with pydantic: from YAML files, from mappings, with overrides; and
turn pydantic's errors into ``TaskDefinitionError``s that name the file, the field (dotted path)
and the expected form (the field's description).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from mmrl_harness.tasks.files import Problem, TaskDefinitionError, read_yaml
from mmrl_harness.tasks.schema import TaskDefinition

_FIELD_PREFIX = re.compile(r"^([a-z_][a-z0-9_.]*): ")


# -- validation ------------------------------------------------------------------------------
def task_from_dict(data: Mapping[str, Any], source: str | Path | None = None) -> TaskDefinition:
    """Validate a mapping as a ``TaskDefinition``; errors become a ``TaskDefinitionError``."""
    try:
        task = TaskDefinition.model_validate(dict(data))
    except ValidationError as err:
        raise TaskDefinitionError(source, problems_from(err, TaskDefinition)) from None
    if source is not None and not str(source).startswith("<"):
        task._source = Path(source)
    return task


def load_task_file(path: str | Path) -> TaskDefinition:
    """Load one task YAML file (``name`` defaults to the file's stem)."""
    path = Path(path)
    data = read_yaml(path)
    data.setdefault("name", path.stem)
    return task_from_dict(data, path)


def with_overrides(task: TaskDefinition, overrides: Mapping[str, Any]) -> TaskDefinition:
    """A copy of ``task`` with dotted fields replaced, re-validated.

    ``with_overrides(t, {"env_kwargs.line_length": 9, "max_steps": 30})`` is how sweeps vary
    difficulty without writing a YAML per point.
    """
    data = task.model_dump(exclude_unset=True)
    data.setdefault("name", task.name)
    for dotted, value in overrides.items():
        node = data
        *parents, last = dotted.split(".")
        for key in parents:
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                raise TaskDefinitionError(
                    task.source or task.name,
                    [Problem(dotted, f"{key!r} is not a mapping", "a path into mapping fields")],
                )
            node = child
        node[last] = value
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


# -- error formatting ------------------------------------------------------------------------
def problems_from(err: ValidationError, model: type[BaseModel]) -> list[Problem]:
    """Turn pydantic errors into ``Problem``s with dotted field paths and field descriptions."""
    merged: dict[str, Problem] = {}
    for error in err.errors(include_url=False):
        path, description = _field_path(model, error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        lead = _FIELD_PREFIX.match(message)  # model-level checks name their field, see schema
        if lead and error["type"] == "value_error":
            path = f"{path}.{lead.group(1)}" if path else lead.group(1)
            message = message[lead.end() :]
            description = _description_of(model, path) or description
        if error["type"] == "extra_forbidden":  # the path ends at the unknown key itself
            parent = _field_path(model, error["loc"][:-1])[0]
            path = f"{parent}.{error['loc'][-1]}" if parent else str(error["loc"][-1])
            known = _known_fields(model, error["loc"][:-1])
            message = "unknown field"
            description = f"one of: {', '.join(known)}" if known else description
        elif error["type"] != "missing" and "input" in error and path and not lead:
            message = f"{message} (got {error['input']!r})"
        if path in merged:  # a union reports one error per member; keep them in one line
            message = f"{merged[path].message}; or {message}"
        merged[path] = Problem(path, message, description)
    return list(merged.values())


def _field_path(model: type[BaseModel], loc: tuple[int | str, ...]) -> tuple[str, str]:
    """``("parser", "kind")`` -> ``("parser.kind", <description of kind>)``."""
    parts: list[str] = []
    description = ""
    current: type[BaseModel] | None = model
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
            continue
        if current is not None and item in current.model_fields:
            info = current.model_fields[item]
            description = info.description or description
            parts.append(item)
            current = _model_in(info.annotation)
        elif current is None and parts and not _looks_like_union_tag(item):
            parts.append(item)  # a key of a mapping field, e.g. actions.left
        # else: a union member tag pydantic inserts (e.g. "list[int]"); not a user-visible field
    return ".".join(parts).replace(".[", "["), description


def _description_of(model: type[BaseModel], dotted: str) -> str:
    current: type[BaseModel] | None = model
    description = ""
    for part in dotted.split("."):
        if current is None or part not in current.model_fields:
            return description
        description = current.model_fields[part].description or ""
        current = _model_in(current.model_fields[part].annotation)
    return description


def _looks_like_union_tag(item: str) -> bool:
    return "[" in item or item in ("int", "str", "float", "bool", "dict") or item[:1].isupper()


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside ``X | None``, if any."""
    candidates = [annotation, *getattr(annotation, "__args__", ())]
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _known_fields(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    current: type[BaseModel] | None = model
    for item in loc:
        if current is None or not isinstance(item, str) or item not in current.model_fields:
            return []
        current = _model_in(current.model_fields[item].annotation)
    return list(current.model_fields) if current is not None else []
