"""Plugin discovery over ``importlib.metadata`` entry points: lazy, isolated, versioned.

Listing reads entry-point metadata only (no plugin module and no torch is imported). Loading a
plugin imports it in isolation: a plugin that fails is reported with its distribution and error
while every other plugin keeps working; a plugin the user *named* fails loudly.

Written by hand (not pluggy/stevedore) because the contract needs three things those do not give
together: metadata-only listing, per-plugin failure isolation with a cached error, and a
plugin-API version check on the loaded object.
"""

from __future__ import annotations

import difflib
import functools
import os
import pkgutil
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import Distribution, EntryPoint, EntryPoints, entry_points
from typing import Any, Generic, Literal, Protocol, TypeVar

from mmrl_harness.errors import MMRLError

#: The plugin API this harness implements. A plugin declares the version it targets with a
#: ``plugin_api_version`` attribute on the object its entry point names.
PLUGIN_API_VERSION = 1

PluginKind = Literal["fusion", "tasks", "architectures", "algorithms"]
KINDS: tuple[PluginKind, ...] = ("fusion", "tasks", "architectures", "algorithms")

#: Comma-separated ``kind:name`` (or bare ``name``) to ignore, like pytest's ``-p no:name``.
DISABLE_ENV = "MMRL_DISABLE_PLUGINS"

_VALUE = re.compile(r"^(?P<module>[\w.]+)\s*(:\s*(?P<attr>[\w.]+)\s*)?(\[.*\])?\s*$")

T = TypeVar("T")


def group_name(kind: str) -> str:
    """The entry-point group of a plugin kind, e.g. ``mmrl_harness.fusion``."""
    return f"mmrl_harness.{kind}"


class PluginError(MMRLError):
    """Base class of every plugin problem."""


class UnknownPluginError(PluginError, KeyError):
    """No plugin of that kind has that name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class PluginLoadError(PluginError):
    """The plugin's module raised on import or its entry point is malformed."""


class PluginValidationError(PluginError):
    """The plugin loaded but is not what its kind requires (wrong type or API version)."""


@dataclass(frozen=True)
class PluginInfo:
    """What the metadata says about one plugin, read without importing it."""

    name: str
    kind: str
    value: str
    distribution: str
    version: str

    @property
    def malformed(self) -> str | None:
        """Why the entry-point value is unusable, or None when it is well formed."""
        if _VALUE.match(self.value) and ":" in self.value:
            return None
        return (
            f"malformed entry point {self.name} = {self.value!r} in group "
            f"{group_name(self.kind)} of {self.distribution} {self.version}: expected "
            "'package.module:attribute'"
        )


def require_concrete_subclass(obj: Any, base: type, info: PluginInfo, kind: str) -> None:
    """Raise ``PluginValidationError`` unless ``obj`` is a subclass of ``base`` with no abstract
    methods left (the check every class-valued plugin kind starts with)."""
    if not (isinstance(obj, type) and issubclass(obj, base)):
        raise PluginValidationError(
            f"{kind} plugin {info.name!r} from {info.distribution} {info.version} must be a "
            f"subclass of {base.__module__}.{base.__qualname__}, got {obj!r}"
        )
    abstract = getattr(obj, "__abstractmethods__", None)
    if abstract:
        missing = ", ".join(sorted(abstract))
        raise PluginValidationError(
            f"{kind} plugin {info.name!r} from {info.distribution} {info.version} does not "
            f"implement {missing}"
        )


def _disabled() -> set[str]:
    raw = os.environ.get(DISABLE_ENV, "")
    return {item.strip() for item in raw.split(",") if item.strip()}


class Registry(Generic[T]):
    """Plugins of one kind: names from metadata, objects loaded on first use and cached.

    ``validate`` checks a loaded object (e.g. "is a FusionAdapter subclass") and raises
    ``PluginValidationError``; it runs after the plugin-API version check.
    """

    def __init__(self, kind: PluginKind, validate: Callable[[Any, PluginInfo], None] | None = None):
        self.kind = kind
        self._validate = validate
        self._infos: dict[str, PluginInfo] | None = None
        self._loaded: dict[str, T] = {}
        self._errors: dict[str, PluginError] = {}
        self._local: dict[str, T] = {}

    # -- metadata ---------------------------------------------------------------------------
    def infos(self) -> dict[str, PluginInfo]:
        """Every plugin of this kind, by name, from entry-point metadata only."""
        if self._infos is None:
            off = _disabled()
            found: dict[str, PluginInfo] = {}
            for ep in _all_entry_points().select(group=group_name(self.kind)):
                if ep.name in off or f"{self.kind}:{ep.name}" in off:
                    continue
                found.setdefault(ep.name, _info(ep, self.kind))
            self._infos = found
        return {**self._infos, **{n: _local_info(n, self.kind) for n in self._local}}

    def disabled(self) -> dict[str, PluginInfo]:
        """Installed plugins of this kind that ``MMRL_DISABLE_PLUGINS`` hides, by name."""
        off = _disabled()
        return {
            ep.name: _info(ep, self.kind)
            for ep in _all_entry_points().select(group=group_name(self.kind))
            if ep.name in off or f"{self.kind}:{ep.name}" in off
        }

    def names(self) -> list[str]:
        """Sorted plugin names."""
        return sorted(self.infos())

    def register(self, name: str, obj: T) -> None:
        """Register an object in-process (notebooks, tests); it shadows an entry point.

        It passes the same checks as an entry-point plugin (API version, then the kind's
        validator), so what works registered in a notebook also works once published.
        """
        info = _local_info(name, self.kind)
        self._check_api(obj, info)
        if self._validate is not None:
            self._validate(obj, info)
        self._local[name] = obj

    def require(self, name: str) -> None:
        """Raise ``UnknownPluginError`` (with "did you mean") unless ``name`` exists; imports
        nothing, so inputs can be checked before a model or plugin loads."""
        if name in self._local:
            return
        infos = self.infos()
        if name not in infos:
            raise UnknownPluginError(self._unknown_message(name, infos))

    # -- loading ----------------------------------------------------------------------------
    def load(self, name: str) -> T:
        """The plugin object; raises a ``PluginError`` that says what is wrong and what to do."""
        if name in self._local:
            return self._local[name]
        infos = self.infos()
        if name not in infos:
            raise UnknownPluginError(self._unknown_message(name, infos))
        if name in self._loaded:
            return self._loaded[name]
        if name in self._errors:
            raise self._errors[name]
        info = infos[name]
        try:
            obj = self._import(info)
            self._check_api(obj, info)
            if self._validate is not None:
                self._validate(obj, info)
        except PluginError as err:
            self._errors[name] = err
            raise
        self._loaded[name] = obj
        return obj

    def load_all(self) -> dict[str, T | PluginError]:
        """Load every plugin, isolating failures: a broken one never hides the others."""
        out: dict[str, T | PluginError] = {}
        for name in self.names():
            try:
                out[name] = self.load(name)
            except PluginError as err:
                out[name] = err
        return out

    def _import(self, info: PluginInfo) -> Any:
        if info.malformed:
            raise PluginLoadError(info.malformed)
        try:
            return EntryPoint(info.name, info.value, group_name(self.kind)).load()
        except Exception as err:
            raise PluginLoadError(
                f"{self.kind} plugin {info.name!r} from {info.distribution} {info.version} "
                f"failed to load ({info.value}): {type(err).__name__}: {err}"
            ) from err

    def _check_api(self, obj: Any, info: PluginInfo) -> None:
        declared = getattr(obj, "plugin_api_version", None)
        if declared != PLUGIN_API_VERSION:
            what = (
                "declares no plugin_api_version"
                if declared is None
                else (f"targets plugin API {declared!r}")
            )
            raise PluginValidationError(
                f"{self.kind} plugin {info.name!r} from {info.distribution} {info.version} "
                f"{what}, but this mmrl-harness implements plugin API {PLUGIN_API_VERSION}; "
                f"set plugin_api_version = {PLUGIN_API_VERSION} after porting the plugin, or "
                "install a harness version that matches it"
            )

    def _unknown_message(self, name: str, infos: dict[str, PluginInfo]) -> str:
        off = self.disabled().get(name)
        if off is not None:
            return (
                f"{self.kind} plugin {name!r} from {off.distribution} {off.version} is disabled "
                f"by {DISABLE_ENV}={os.environ.get(DISABLE_ENV, '')!r}; remove it from that "
                "variable to use it"
            )
        close = difflib.get_close_matches(name, list(infos), n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        known = ", ".join(sorted(infos)) or "none installed"
        return f"unknown {self.kind} plugin {name!r}.{hint} Available: {known}."


class _Selectable(Protocol):
    """What ``entry_points()`` returns: ``EntryPoints``, or on Python 3.11 ``SelectableGroups``."""

    def select(self, *, group: str = ...) -> EntryPoints:
        """The entry points of ``group``."""
        ...


@functools.cache
def _all_entry_points() -> _Selectable:
    """Every installed entry point, read once per process for all plugin kinds.

    Each ``entry_points()`` call walks every installed distribution; reading them once instead of
    once per kind is most of what a listing command costs (``reset()`` forgets them).
    """
    return entry_points()


@functools.cache
def _name_and_version(dist: Distribution) -> tuple[str, str]:
    # ``dist.name`` and ``dist.version`` each parse the distribution's METADATA file again; the
    # entry points of one ``entry_points()`` call share their distribution object, so one parse
    # serves every plugin it provides.
    metadata = dist.metadata
    return str(metadata["Name"]), str(metadata["Version"])


def _info(ep: EntryPoint, kind: str) -> PluginInfo:
    name, version = _name_and_version(ep.dist) if ep.dist is not None else ("?", "?")
    return PluginInfo(name=ep.name, kind=kind, value=ep.value, distribution=name, version=version)


def _local_info(name: str, kind: str) -> PluginInfo:
    return PluginInfo(
        name=name, kind=kind, value="<registered in-process>", distribution="<local>", version="-"
    )


def _validator(path: str) -> Callable[[Any, PluginInfo], None]:
    """A validator defined in a module imported only when a plugin is actually loaded."""

    def validate(obj: Any, info: PluginInfo) -> None:
        pkgutil.resolve_name(path)(obj, info)

    return validate


fusion_adapters: Registry[Any] = Registry(
    "fusion", _validator("mmrl_harness.fusion.base:validate_plugin")
)
architectures: Registry[Any] = Registry(
    "architectures", _validator("mmrl_harness.models.anatomy:validate_plugin")
)
tasks: Registry[Any] = Registry("tasks", _validator("mmrl_harness.tasks:validate_plugin"))
algorithms: Registry[Any] = Registry(
    "algorithms", _validator("mmrl_harness.train.algorithms.base:validate_plugin")
)

REGISTRIES: dict[str, Registry[Any]] = {
    "fusion": fusion_adapters,
    "tasks": tasks,
    "architectures": architectures,
    "algorithms": algorithms,
}


def get_registry(kind: str) -> Registry[Any]:
    """The registry of a plugin kind, with a suggestion for a misspelt kind."""
    if kind not in REGISTRIES:
        close = difflib.get_close_matches(kind, list(REGISTRIES), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownPluginError(f"unknown plugin kind {kind!r}.{hint} Kinds: {', '.join(KINDS)}.")
    return REGISTRIES[kind]


def plugin_versions() -> dict[str, str]:
    """``{distribution: version}`` of every distribution that provides a plugin (for results)."""
    out: dict[str, str] = {}
    for reg in REGISTRIES.values():
        for info in reg.infos().values():
            out[info.distribution] = info.version
    return dict(sorted(out.items()))


def reset() -> None:
    """Forget cached metadata and loads (after installing a plugin in the same process)."""
    _all_entry_points.cache_clear()
    _name_and_version.cache_clear()
    for reg in REGISTRIES.values():
        reg._infos = None
        reg._loaded.clear()
        reg._errors.clear()
