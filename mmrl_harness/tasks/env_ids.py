"""Which Gymnasium ids a task may name, checked without running code the user did not install.

An id resolves only through Gymnasium's registry as populated by the harness's built-in envs
(``mmrl_harness.envs``), Gymnasium's own, and installed ``mmrl_harness.tasks`` plugins (whose
modules may register ids when they load). Gymnasium's ``module:Id`` form would import ``module``
because a file says so, which runs its code: it is refused unless the caller opts in
(``allow_imports=True``; ``--allow-env-imports`` on the CLI, ``allow_env_imports: true`` in a
training config). Even then the module is looked up with the working directory removed from
``sys.path`` (``python -m`` puts it first), so a stray ``evilmod.py`` next to the task file is
never what runs.
"""

from __future__ import annotations

import difflib
import importlib
import sys
from pathlib import Path

import gymnasium

import mmrl_harness.envs  # noqa: F401  (registers the mmrl/ ids)
from mmrl_harness.config_io import Problem

__all__ = ["env_id_problem", "registered_id"]

#: Modules imported because a caller opted in; naming them again imports nothing new.
_OPTED_IN: set[str] = set()

_OPT_IN = (
    "pass --allow-env-imports (or allow_env_imports: true in a training config), which runs it"
)


def env_id_problem(env_id: str, *, allow_imports: bool = False) -> Problem | None:
    """What is wrong with ``env_id`` as a task's ``env`` (field ``env``), or None when fine.

    With ``allow_imports`` a ``module:Id`` prefix imports ``module`` (from outside the working
    directory) first; without it the prefix is refused before anything is imported.
    """
    module, sep, bare = env_id.rpartition(":")
    if sep:
        if not module or ":" in module:
            return Problem("env", f"malformed env id {env_id!r}", "an id like 'FrozenLake-v1'")
        if module not in _OPTED_IN:
            if not allow_imports:
                return _import_refused(env_id, module, bare)
            problem = _import_outside_cwd(module)
            if problem is not None:
                return problem
            _OPTED_IN.add(module)
    if bare in gymnasium.registry:
        return None
    _load_task_plugins()  # installed plugins may register their envs when imported
    if bare in gymnasium.registry:
        return None
    close = difflib.get_close_matches(bare, list(gymnasium.registry), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return Problem(
        "env",
        f"unknown env id {bare!r}{hint}",
        "an id registered with Gymnasium: mmrl/... built-ins, Gymnasium's own (FrozenLake-v1, "
        "CartPole-v1...), or one an installed mmrl_harness.tasks plugin registers",
    )


def registered_id(env_id: str) -> str:
    """The id to pass to ``gymnasium.make``: ``env_id`` without a ``module:`` prefix that was
    already imported by opt-in (so Gymnasium itself never imports anything)."""
    return env_id.rpartition(":")[2]


def _import_refused(env_id: str, module: str, bare: str) -> Problem:
    if bare in gymnasium.registry:
        todo = f"drop the prefix: {bare!r} is already registered"
    else:
        todo = (
            f"install {module!r} as a package whose mmrl_harness.tasks plugin registers "
            f"{bare!r}, or {_OPT_IN}"
        )
    return Problem(
        "env",
        f"{env_id!r} asks to import module {module!r}, which would run its code; refused",
        todo,
    )


def _import_outside_cwd(module: str) -> Problem | None:
    """Import ``module`` with the working directory off ``sys.path`` for the duration."""
    cwd = Path.cwd().resolve()
    saved = list(sys.path)
    sys.path[:] = [p for p in saved if p not in ("", ".") and _resolved(p) != cwd]
    try:
        importlib.import_module(module)
    except ImportError as err:
        return Problem(
            "env",
            f"cannot import {module!r} for env ids: {err}",
            "an installed module (the working directory is not searched)",
        )
    finally:
        sys.path[:] = saved
    return None


def _resolved(entry: str) -> Path | None:
    try:
        return Path(entry).resolve()
    except OSError:
        return None


def _load_task_plugins() -> None:
    from mmrl_harness.registry import tasks

    tasks.load_all()  # failures are isolated and reported by `mmrl plugins`, not here
