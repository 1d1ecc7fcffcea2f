"""The result of a contract check: one line per check, and an error that lists the failures."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from mmrl_harness.errors import MMRLError


class ContractViolation(MMRLError, AssertionError):
    """A plugin breaks the harness's contract; the message lists every failed check.

    An ``AssertionError`` too, so pytest reports it as a test failure, not as an error.
    """


@dataclass(frozen=True)
class CheckResult:
    """One check of one plugin (on one tiny model family, where that applies)."""

    #: e.g. ``"identity at init [tiny-llava]"``.
    name: str
    passed: bool
    #: Why it failed (or, when it passed, a measured figure worth showing).
    detail: str = ""


@dataclass
class ContractReport:
    """Every check run on one plugin, in order."""

    #: What was checked, e.g. ``"fusion adapter 'film'"``.
    subject: str
    results: list[CheckResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when every check passed."""
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> list[CheckResult]:
        """The checks that failed."""
        return [r for r in self.results if not r.passed]

    def run(self, name: str, check: Callable[[], str | None]) -> CheckResult:
        """Run ``check``; an exception (an assertion or anything the plugin raised) fails it."""
        try:
            detail = check() or ""
        except Exception as err:  # a broken plugin may raise anything: report it, go on
            message = str(err).strip() or type(err).__name__
            if not isinstance(err, AssertionError):
                message = f"{type(err).__name__}: {message}"
            result = CheckResult(name, False, message)
        else:
            result = CheckResult(name, True, detail)
        self.results.append(result)
        return result

    def raise_for_failures(self) -> None:
        """Raise ``ContractViolation`` listing every failed check, if any failed."""
        if self.passed:
            return
        lines = "\n".join(f"  - {r.name}: {r.detail}" for r in self.failures)
        raise ContractViolation(
            f"{self.subject} fails {len(self.failures)} of {len(self.results)} contract "
            f"check(s):\n{lines}"
        )

    def __str__(self) -> str:
        lines = [f"{self.subject}: {'passed' if self.passed else 'FAILED'}"]
        for r in self.results:
            mark = "ok  " if r.passed else "FAIL"
            lines.append(f"  {mark} {r.name}" + (f": {r.detail}" if r.detail else ""))
        return "\n".join(lines)
