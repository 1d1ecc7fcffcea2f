"""Task YAML files: reading them (with lm-eval style ``include:``) and the errors they raise.

``include: base.yaml`` (or a list) merges the included files first, then this file's keys on top:
mappings merge key by key, anything else replaces. ``name`` is never inherited.
Imports only PyYAML, so listing tasks stays fast (no pydantic until a definition is validated).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mmrl_harness.errors import MMRLError

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: 10x faster


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a task definition."""

    field: str  # dotted path, e.g. "invalid_action.policy"; "" for the whole document
    message: str
    expected: str = ""

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field else ""
        tail = f"\n      expected: {self.expected}" if self.expected else ""
        return f"{where}{self.message}{tail}"


class DefinitionError(MMRLError, ValueError):
    """A YAML definition is malformed; says which file, which field, and the expected form.

    Shared by task definitions and training configs, so both report problems the same way.
    """

    #: What kind of document this is, for the first line of the message.
    what = "definition"

    def __init__(self, source: str | Path | None, problems: list[Problem]):
        self.source = str(source) if source is not None else f"<{self.what}>"
        self.problems = problems
        super().__init__(str(self))

    @property
    def fields(self) -> list[str]:
        """The dotted paths of the offending fields."""
        return [p.field for p in self.problems]

    def __str__(self) -> str:
        lines = [f"{self.source}: invalid {self.what}"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


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
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise TaskDefinitionError(path, [Problem("", f"cannot read the file: {err}")]) from None
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise TaskDefinitionError(
            path, [Problem("", f"{where}YAML syntax error: {problem}")]
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TaskDefinitionError(
            path,
            [
                Problem(
                    "",
                    f"the file holds a {type(data).__name__}",
                    "a mapping of task fields (name: ..., kind: ...)",
                )
            ],
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


def deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``: nested mappings merge key by key, everything else replaces."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out
