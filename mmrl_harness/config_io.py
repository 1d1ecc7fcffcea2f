"""Reading the harness's YAML inputs safely: one reader, one override syntax, one error type.

Every YAML file the harness reads (task definitions, training configs) goes through
``read_yaml_mapping``, and every ``KEY=VALUE`` override through ``parse_assignments`` and
``apply_overrides``, so all of them refuse the same things with the same messages:

- YAML aliases (``*name``): refused while the parser streams events, before anything is built,
  so a "billion laughs" document never expands (no harness input needs them; ``include:``
  shares definitions between task files instead);
- files over ``MAX_FILE_BYTES`` and nesting deeper than ``MAX_DEPTH``: refused the same way
  (libyaml's composer recurses in C, so a very deep document would crash the interpreter);
- anything but plain data: the loader is PyYAML's safe loader (no Python object tags).

Errors are ``DefinitionError``s naming the file, the field (dotted path) and the expected form.
Imports only PyYAML, so listing tasks stays fast.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mmrl_harness.errors import MMRLError

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: 10x faster

#: Largest YAML file read (bytes); harness inputs are a few kilobytes.
MAX_FILE_BYTES = 1 << 20
#: Deepest nesting of mappings and lists accepted in one document.
MAX_DEPTH = 32


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a definition."""

    field: str  # dotted path, e.g. "invalid_action.policy"; "" for the whole document
    message: str
    expected: str = ""

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field else ""
        tail = f" (expected: {self.expected})" if self.expected else ""
        return f"{where}{self.message}{tail}"


class DefinitionError(MMRLError, ValueError):
    """A YAML definition is malformed; says which file, which field, and the expected form.

    Shared by task definitions and training configs, so both report problems the same way: one
    line, ``FILE: invalid WHAT: FIELD: MESSAGE (expected: FORM); FIELD: ...``.
    """

    #: What kind of document this is, for the start of the message.
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
        return f"{self.source}: invalid {self.what}: " + "; ".join(str(p) for p in self.problems)


# -- reading ---------------------------------------------------------------------------------
def read_yaml_mapping(
    path: Path, error: type[DefinitionError] = DefinitionError, expected: str = "a mapping"
) -> dict[str, Any]:
    """The mapping in the YAML file ``path`` (empty for an empty file), read safely.

    Raises ``error`` (naming ``path``) when the file is missing, unreadable, too large, not YAML,
    uses aliases, nests too deep, or holds something other than a mapping (``expected`` says
    what it should hold).
    """
    try:
        # A bounded read, not stat(): /dev/zero or a pipe reports size 0 and never ends.
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            raise error(
                path,
                [
                    Problem(
                        "",
                        f"the file is over the {MAX_FILE_BYTES}-byte limit",
                        "a small YAML file (put data in a dataset)",
                    )
                ],
            )
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise error(path, [Problem("", f"cannot read the file: {reason}")]) from None
    data = parse_yaml(text, path, error)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(path, [Problem("", f"the file holds a {type(data).__name__}", expected)])
    return data


def parse_yaml(
    text: str, source: str | Path | None = None, error: type[DefinitionError] = DefinitionError
) -> Any:
    """The YAML document in ``text``; aliases, deep nesting and non-data tags raise ``error``."""
    if len(text) > MAX_FILE_BYTES:
        raise error(source, [Problem("", f"the text is over the {MAX_FILE_BYTES}-byte limit")])
    try:
        refused = _refuse_aliases_and_depth(text)
        if refused is not None:
            raise error(source, [refused])
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise error(source, [Problem("", f"{where}YAML syntax error: {problem}")]) from None


@dataclass
class _Frame:
    """One open mapping or list while streaming events (for field paths and duplicate keys)."""

    mapping: bool
    state: str = "key"  # mappings: "key", "value", or "complex_key" (a collection as a key)
    key: str = "?"
    index: int = 0
    seen: set[str] = field(default_factory=set)

    def value_done(self) -> None:
        if not self.mapping:
            self.index += 1
        else:  # after a complex key its value comes next; after a value, the next key
            self.state = "value" if self.state == "complex_key" else "key"


def _refuse_aliases_and_depth(text: str) -> Problem | None:
    """Stream the parser's events (never building nodes) and report the first alias, duplicate
    key, or collection nested deeper than ``MAX_DEPTH``, with its dotted field path."""
    frames: list[_Frame] = []
    for event in yaml.parse(text, Loader=_Loader):
        top = frames[-1] if frames else None
        if isinstance(event, yaml.AliasEvent):
            return Problem(
                _event_path(frames),
                f"{_line(event)}YAML alias *{event.anchor} refused (aliases can expand into "
                "huge documents)",
                "write the value out, or share definitions with `include:`",
            )
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            if len(frames) >= MAX_DEPTH:
                return Problem(
                    _event_path(frames),
                    f"{_line(event)}nested more than {MAX_DEPTH} levels deep",
                    f"at most {MAX_DEPTH} levels of mappings and lists",
                )
            if top is not None and top.mapping and top.state == "key":
                top.state = "complex_key"
            frames.append(_Frame(isinstance(event, yaml.MappingStartEvent)))
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            frames.pop()
            if frames:
                frames[-1].value_done()
        elif isinstance(event, yaml.ScalarEvent) and top is not None:
            if not (top.mapping and top.state == "key"):
                top.value_done()
                continue
            if event.value in top.seen:
                top.key = event.value
                return Problem(
                    _event_path(frames),
                    f"{_line(event)}duplicate key {event.value!r} (the later one would "
                    "silently win)",
                    "each key once per mapping",
                )
            top.seen.add(event.value)
            top.state, top.key = "value", event.value
    return None


def _event_path(frames: list[_Frame]) -> str:
    parts = [f".{f.key}" if f.mapping else f"[{f.index}]" for f in frames]
    return "".join(parts).lstrip(".")


def _line(event: Any) -> str:
    mark = getattr(event, "start_mark", None)
    return f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""


# -- overrides -------------------------------------------------------------------------------
class OverrideError(MMRLError, ValueError):
    """A ``KEY=VALUE`` override is malformed."""


def parse_assignments(items: Iterable[str] | None, option: str = "--override") -> dict[str, Any]:
    """``["a.b=3", "c=red"]`` -> ``{"a.b": 3, "c": "red"}`` (values parsed as YAML, safely)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise OverrideError(f"{option}: expected KEY=VALUE (e.g. max_steps=30), got {item!r}")
        try:
            out[key.strip()] = parse_yaml(value, f"{option} {key.strip()}")
        except DefinitionError as err:
            raise OverrideError(str(err)) from None
    return out


def apply_overrides(
    data: Mapping[str, Any],
    overrides: Mapping[str, Any],
    source: str | Path | None = None,
    error: type[DefinitionError] = DefinitionError,
    dotted_leaves: Collection[str] = (),
) -> dict[str, Any]:
    """A copy of ``data`` with dotted keys replaced: ``{"lora.r": 4, "grpo.beta": 0.04}``.

    Missing intermediate mappings are created. Keys in ``dotted_leaves`` hold mappings whose keys
    are themselves dotted paths (a training config's ``task_overrides``), so
    ``task_overrides.<rest>`` sets the one entry ``<rest>`` instead of descending further.
    """
    out = deep_merge({}, data)
    for dotted, value in overrides.items():
        head, _, rest = dotted.partition(".")
        path = [head, rest] if head in dotted_leaves and rest else dotted.split(".")
        node = out
        for key in path[:-1]:
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                raise error(
                    source,
                    [Problem(dotted, f"{key!r} is not a mapping", "a path into mapping fields")],
                )
            node = child
        node[path[-1]] = value
    return out


def deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``: nested mappings merge key by key, everything else replaces."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# -- pydantic errors as Problems --------------------------------------------------------------
_FIELD_PREFIX = re.compile(r"^([a-z_][a-z0-9_.]*): ")  # "field: message" from model checks


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
    from pydantic import BaseModel  # here, not at the top: listing tasks never needs pydantic

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
