"""Task YAML files: reading them (with lm-eval style ``include:``) and the errors they raise.

Each file is read by ``mmrl_harness.config_io`` (safe loader, no aliases, size and depth limits).

``include: base.yaml`` (or a list) merges the included files first, then this file's keys on top:
mappings merge key by key, anything else replaces. ``name`` is never inherited.
Imports only PyYAML, so listing tasks stays fast (no pydantic until a definition is validated).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmrl_harness.config_io import DefinitionError, Problem, deep_merge, read_yaml_mapping
from mmrl_harness.errors import MMRLError

# Re-exported: these lived here before ``mmrl_harness.config_io``; old imports keep working.
__all__ = [
    "DefinitionError",
    "Problem",
    "TaskDefinitionError",
    "UnknownTaskError",
    "deep_merge",
    "read_yaml",
]


class TaskDefinitionError(DefinitionError):
    """A task definition is malformed; says which file, which field, and the expected form."""

    what = "task definition"


class UnknownTaskError(MMRLError, KeyError):
    """No task has that name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def read_yaml(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The mapping in ``path`` with its ``include:`` files merged underneath."""
    path = path.resolve()
    if path in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, path))
        raise TaskDefinitionError(_seen[0], [Problem("include", f"include cycle: {chain}")])
    data = read_yaml_mapping(
        path, TaskDefinitionError, "a mapping of task fields (name: ..., kind: ...)"
    )
    includes = data.pop("include", None)
    if includes is None:
        return data
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise TaskDefinitionError(
            path,
            [
                Problem(
                    "include",
                    f"got {includes!r}",
                    "a YAML file path or a list of them, relative to this file",
                )
            ],
        )
    merged: dict[str, Any] = {}
    for include in includes:
        base_path = (path.parent / include).resolve()
        if not base_path.is_file():
            raise TaskDefinitionError(
                path, [Problem("include", f"no such file {include!r} (looked for {base_path})")]
            )
        base = read_yaml(base_path, (*_seen, path))
        base.pop("name", None)  # a base's name would clash with the task that includes it
        merged = deep_merge(merged, base)
    return deep_merge(merged, data)
