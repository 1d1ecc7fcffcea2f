"""Where tasks come from: the built-in suite folder and ``mmrl_harness.tasks`` plugins.

A tasks plugin's entry point names one of:
- a ``TaskFolder`` (a folder of task YAMLs; the built-in suite is one),
- a ``TaskDefinition``,
- a factory: a callable with ``plugin_api_version = 1`` (see ``task_factory``) returning
  definitions, a ``TaskFolder``, or a folder path.

Listing reads YAML only (no pydantic, torch, Gymnasium or PIL), so ``mmrl tasks`` starts fast;
``list_tasks(check=True)`` also validates every definition. One broken file or plugin shows up as
a row with an error, never hiding the others.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import mmrl_harness
from mmrl_harness import registry
from mmrl_harness.registry import PLUGIN_API_VERSION, PluginError, PluginInfo, PluginValidationError
from mmrl_harness.tasks.files import TaskDefinitionError, UnknownTaskError, read_yaml

if TYPE_CHECKING:
    from mmrl_harness.tasks.schema import TaskDefinition

F = TypeVar("F", bound=Callable[..., Any])


def builtin_suite_dir() -> Path:
    """The built-in suite: ``mmrl_harness/task_suite`` in a wheel, the repo's ``tasks/`` else."""
    package = Path(mmrl_harness.__file__).parent
    shipped = package / "task_suite"
    return shipped if shipped.is_dir() else package.parent / "tasks"


class TaskFolder:
    """A folder of task YAML files (searched recursively; ``_*.yaml`` are include-only bases)."""

    plugin_api_version = PLUGIN_API_VERSION

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"TaskFolder({str(self.path)!r})"

    def files(self) -> list[Path]:
        """The task files, sorted."""
        if not self.path.is_dir():
            return []
        return sorted(p for p in self.path.rglob("*.yaml") if not p.name.startswith("_"))

    def load(self) -> list[TaskDefinition | TaskDefinitionError]:
        """Every task in the folder, validated; a malformed file yields its error instead."""
        from mmrl_harness.tasks.loader import load_task_file

        out: list[TaskDefinition | TaskDefinitionError] = []
        for path in self.files():
            try:
                out.append(load_task_file(path))
            except TaskDefinitionError as err:
                out.append(err)
        return out


def task_factory(func: F) -> F:
    """Mark a function returning task definitions as a tasks plugin (sets the API version)."""
    func.plugin_api_version = PLUGIN_API_VERSION  # type: ignore[attr-defined]
    return func


BUILTIN_SUITE = TaskFolder(builtin_suite_dir())


def validate_plugin(obj: Any, info: PluginInfo) -> None:
    """The tasks registry's check on a loaded plugin object."""
    if isinstance(obj, TaskFolder) or callable(obj) or _is_definition(obj):
        return
    raise PluginValidationError(
        f"tasks plugin {info.name!r} from {info.distribution} {info.version} is a "
        f"{type(obj).__name__}; expected a TaskFolder, a TaskDefinition, or a factory function "
        "decorated with mmrl_harness.tasks.task_factory"
    )


def _is_definition(obj: Any) -> bool:
    # A TaskDefinition exists only once its module is imported; checking sys.modules keeps
    # listing a folder of YAMLs free of pydantic.
    schema = sys.modules.get("mmrl_harness.tasks.schema")
    return schema is not None and isinstance(obj, schema.TaskDefinition)


@dataclass(frozen=True)
class TaskSummary:
    """One row of ``mmrl tasks``."""

    name: str
    kind: str  # "single_turn" | "multi_turn" ("?" when the file is unreadable)
    env: str  # env id or "dataset:<path>"
    description: str  # first sentence
    version: str
    tags: tuple[str, ...]
    source: str  # the YAML file, or "<plugin NAME>" for definitions built in Python
    plugin: str  # the tasks plugin (entry point name) that provides it
    error: str | None = None  # why the task cannot be loaded; None when it is (or looks) fine


@dataclass
class _Entry:
    summary: TaskSummary
    task: TaskDefinition | None = None  # plugin definitions built in Python
    path: Path | None = None  # YAML files, validated only when asked for
    error: Exception | None = None
    broken_plugin: bool = False  # stands for a plugin whose tasks could not be read at all


def _plugins() -> list[tuple[str, Any]]:
    """(plugin name, object or PluginError) for every tasks plugin, the built-in suite first."""
    loaded: dict[str, Any] = dict(registry.tasks.load_all())
    # Running from a source tree without an install there is no entry-point metadata; the
    # built-in suite must still be there (unless it was disabled by name, which needs metadata).
    if not any(ep.name == "builtin" for ep in entry_points(group=registry.group_name("tasks"))):
        loaded.setdefault("builtin", BUILTIN_SUITE)
    order = sorted(loaded, key=lambda name: (name != "builtin", name))
    return [(name, loaded[name]) for name in order]


def _first_sentence(text: Any) -> str:
    text = " ".join(str(text or "").split())
    return text.split(". ")[0].rstrip(".")


def _file_entry(plugin: str, path: Path) -> _Entry:
    """A summary from the raw YAML (no validation: that waits until the task is used)."""
    try:
        data = read_yaml(path)
    except TaskDefinitionError as err:
        return _Entry(
            TaskSummary(path.stem, "?", "?", "", "?", (), str(path), plugin, str(err)),
            path=path,
            error=err,
        )
    dataset = data.get("dataset")
    env = data.get("env") or (
        f"dataset:{dataset.get('path')}" if isinstance(dataset, dict) else "?"
    )
    tags = data.get("tags")
    tags = tags if isinstance(tags, list) else []
    name = data.get("name", path.stem)
    summary = TaskSummary(
        str(name),
        str(data.get("kind", "?")),
        str(env),
        _first_sentence(data.get("description")),
        str(data.get("version", "1")),
        tuple(str(t) for t in tags),
        str(path),
        plugin,
    )
    return _Entry(summary, path=path)


def _definition_entry(plugin: str, task: TaskDefinition) -> _Entry:
    source = str(task.source) if task.source is not None else f"<plugin {plugin}>"
    return _Entry(
        TaskSummary(
            task.name,
            task.kind,
            task.env_label,
            _first_sentence(task.description),
            task.version,
            tuple(task.tags),
            source,
            plugin,
        ),
        task=task,
    )


def _error_entry(plugin: str, error: Exception) -> _Entry:
    return _Entry(
        TaskSummary(plugin, "?", "?", "", "?", (), f"<plugin {plugin}>", plugin, str(error)),
        error=error,
        broken_plugin=True,
    )


def _expand(plugin: str, obj: Any) -> Iterable[_Entry]:
    if isinstance(obj, Exception):
        yield _error_entry(plugin, obj)
    elif isinstance(obj, (TaskFolder, str, Path)):
        folder = obj if isinstance(obj, TaskFolder) else TaskFolder(obj)
        for path in folder.files():
            yield _file_entry(plugin, path)
    elif _is_definition(obj):
        yield _definition_entry(plugin, obj)
    elif isinstance(obj, Iterable):
        for item in obj:
            yield from _expand(plugin, item)
    elif callable(obj):
        try:
            result = obj()
        except Exception as err:
            yield _error_entry(
                plugin,
                PluginError(
                    f"tasks plugin {plugin!r}: its factory raised {type(err).__name__}: {err}"
                ),
            )
            return
        yield from _expand(plugin, result)
    else:
        yield _error_entry(
            plugin,
            PluginError(
                f"tasks plugin {plugin!r} gave a {type(obj).__name__}, not a TaskDefinition"
            ),
        )


def _entries() -> dict[str, _Entry]:
    entries: dict[str, _Entry] = {}
    for plugin, obj in _plugins():
        for entry in _expand(plugin, obj):
            name = entry.summary.name
            if name in entries:
                first = entries[name].summary
                message = (
                    f"task {name!r} from {entry.summary.source} duplicates the one from "
                    f"{first.source} (plugin {first.plugin!r}); rename one of them"
                )
                duplicate = TaskSummary(
                    name,
                    entry.summary.kind,
                    entry.summary.env,
                    "",
                    "?",
                    (),
                    entry.summary.source,
                    plugin,
                    message,
                )
                entries[f"{name}\0{entry.summary.source}"] = _Entry(
                    duplicate, error=PluginError(message)
                )
                continue
            entries[name] = entry
    return entries


def _check(entry: _Entry) -> TaskSummary:
    """The summary with ``error`` set when the definition does not validate."""
    if entry.error is not None or entry.path is None:
        return entry.summary
    from dataclasses import replace

    from mmrl_harness.tasks.loader import load_task_file

    try:
        entry.task = load_task_file(entry.path)
    except TaskDefinitionError as err:
        entry.error = err
        return replace(entry.summary, error=str(err))
    return entry.summary


def list_tasks(check: bool = False) -> list[TaskSummary]:
    """Every task from the built-in suite and the plugins, sorted by name.

    Reads YAML only; with ``check=True`` every definition is also validated (imports pydantic)
    and a malformed one carries its error. Unreadable files and broken plugins always do.
    """
    entries = _entries().values()
    summaries = [_check(e) if check else e.summary for e in entries]
    return sorted(summaries, key=lambda s: (s.name, s.source))


def _unknown_task_message(name: str, entries: dict[str, _Entry]) -> str:
    """ "unknown task" with suggestions, plus the plugins whose tasks could not be listed."""
    known = sorted({e.summary.name for e in entries.values() if not e.broken_plugin})
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    message = (
        f"unknown task {name!r}.{hint} Available: {', '.join(known)}. "
        "A path to a task YAML file also works."
    )
    broken = [e for e in entries.values() if e.broken_plugin]
    if broken:
        details = "; ".join(f"{e.summary.plugin!r}: {e.summary.error}" for e in broken)
        message += (
            f" It may come from a tasks plugin that failed to load ({details}): fix or "
            f"uninstall it, or hide it with {registry.DISABLE_ENV}."
        )
    disabled = registry.tasks.disabled()
    if disabled:
        names = ", ".join(f"{n!r} ({i.distribution})" for n, i in sorted(disabled.items()))
        message += (
            f" Tasks plugin(s) disabled by {registry.DISABLE_ENV}: {names}; remove a plugin "
            "from that variable to use its tasks."
        )
    return message


def get_task(name: str, *, allow_env_imports: bool = False) -> TaskDefinition:
    """A task by name, or a path to a YAML file; unknown names get "did you mean".

    ``allow_env_imports`` lets a ``module:Id`` env import its module, which runs its code.
    """
    from mmrl_harness.tasks.loader import load_task_file

    if name.endswith((".yaml", ".yml")) or Path(name).is_file():
        return load_task_file(name, allow_env_imports=allow_env_imports)
    entries = _entries()
    entry = entries.get(name)
    if entry is None:
        raise UnknownTaskError(_unknown_task_message(name, entries))
    if entry.error is not None:
        raise entry.error
    if entry.task is not None:
        return entry.task
    assert entry.path is not None
    return load_task_file(entry.path, allow_env_imports=allow_env_imports)
