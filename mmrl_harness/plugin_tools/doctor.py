"""``mmrl plugins doctor``: the ``mmrl_harness.testing`` contract checks, run on installed plugins.

Fusion adapters get every fusion check with their default options on every tiny family; each
task a tasks plugin provides gets the task checks; architectures and algorithms are loaded and
validated. The harness's own plugins are skipped unless named or asked for (its test suite
checks them with the same code).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from mmrl_harness import registry
from mmrl_harness.errors import MMRLError
from mmrl_harness.testing.report import ContractReport

#: The distribution of the built-in plugins.
HARNESS_DISTRIBUTION = "mmrl-harness"


class DoctorError(MMRLError, ValueError):
    """``doctor`` was asked about a plugin or kind that is not installed."""


def doctor(
    name: str | None = None,
    *,
    kind: str | None = None,
    include_builtins: bool = False,
    families: Sequence[str] | None = None,
    checks: Sequence[str] | None = None,
) -> list[ContractReport]:
    """Check the installed plugins (or the one called ``name``); one report per plugin or task.

    ``families`` and ``checks`` narrow the fusion checks (default: all, on every tiny family).
    """
    kinds = [registry.get_registry(kind).kind] if kind else list(registry.KINDS)
    reports: list[ContractReport] = []
    for k in kinds:
        reg = registry.get_registry(k)
        for plugin, info in sorted(reg.infos().items()):
            if name is not None and plugin != name:
                continue
            if name is None and info.distribution == HARNESS_DISTRIBUTION and not include_builtins:
                continue
            reports.extend(_check_plugin(k, plugin, families, checks))
    if name is not None and not reports:
        raise DoctorError(_not_found(name, kinds))
    return reports


def _not_found(name: str, kinds: Sequence[str]) -> str:
    for k in kinds:
        off = registry.get_registry(k).disabled().get(name)
        if off is not None:
            return (
                f"{k} plugin {name!r} from {off.distribution} {off.version} is disabled by "
                f"{registry.DISABLE_ENV}; remove it from that variable to check it"
            )
    return f"no installed plugin is called {name!r}; `mmrl plugins` lists them"


def _check_plugin(
    kind: str, name: str, families: Sequence[str] | None, checks: Sequence[str] | None
) -> list[ContractReport]:
    from mmrl_harness.testing import check_fusion_adapter

    if kind == "fusion":
        report = check_fusion_adapter(
            name, families=families, checks=checks, raise_on_failure=False
        )
        return [report]
    if kind == "tasks":
        return _check_tasks_plugin(name)
    report = ContractReport(f"{kind} plugin {name!r}")
    report.run("loads", lambda: _loaded(kind, name))
    return [report]


def _loaded(kind: str, name: str) -> str:
    registry.get_registry(kind).load(name)
    return "loaded and validated"


def _check_tasks_plugin(name: str) -> list[ContractReport]:
    from mmrl_harness.tasks import list_tasks
    from mmrl_harness.testing import check_task

    summaries = [s for s in list_tasks() if s.plugin == name]
    reports = []
    for summary in summaries:
        if summary.error is not None:
            report = ContractReport(f"task {summary.name!r} (tasks plugin {name!r})")
            report.run("loads", functools.partial(_fail, summary.error))
            reports.append(report)
            continue
        report = check_task(summary.name, raise_on_failure=False)
        report.subject += f" (tasks plugin {name!r})"
        reports.append(report)
    if not reports:
        report = ContractReport(f"tasks plugin {name!r}")
        report.run("loads", lambda: _fail("it provides no task"))
        reports.append(report)
    return reports


def _fail(message: str) -> str:
    raise AssertionError(message)
