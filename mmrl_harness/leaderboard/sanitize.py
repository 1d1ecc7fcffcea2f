"""Strip local paths and user names from a results file before a board stores it.

A results file's provenance holds the run's ``argv`` (``command``), whose paths name the
user's home folder and account; its config may hold output folders and checkpoint paths. The
stored copy keeps what identifies the run (file names, Hub ids, options) and drops where it
ran: ``$HOME`` becomes ``~``, the user name ``<user>``, and any other absolute path keeps only
its last component under ``<local>/``. Records (the policy's own text) are left alone, so the
records hash is unchanged; the document hash is re-stamped over the sanitised document (a
board's stored copy verifies on its own; its ``document_sha256`` is the sanitised one).
"""

from __future__ import annotations

import getpass
import os
import re
from typing import Any

from mmrl_harness.results_schema import EvalResults, document_digest

#: An absolute POSIX path not inside a URL (``https://x/y``) or a relative path (``a/b``).
_ABS_PATH = re.compile(r"(?<![\w.~:/<>-])/(?:[^\s/'\"=,;:]+/)*([^\s/'\"=,;:]*)")


def local_identity() -> tuple[str, str | None]:
    """This machine's home folder and user name (either may be unknown)."""
    home = os.path.expanduser("~")
    try:
        user: str | None = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        user = None
    return home, user


def scrub_text(text: str, home: str, user: str | None) -> str:
    """``text`` with ``home`` -> ``~``, ``user`` -> ``<user>``, other absolute paths cut."""
    if home and home != "/":
        text = text.replace(home.rstrip("/"), "~")
    text = _ABS_PATH.sub(lambda m: f"<local>/{m.group(1)}", text)
    if user and len(user) >= 2:  # a one-letter name would mangle ordinary words
        text = re.sub(rf"(?<![\w]){re.escape(user)}(?![\w])", "<user>", text)
    return text


def scrub(value: Any, home: str, user: str | None) -> Any:
    """``value`` (JSON-like) with every string scrubbed, keys included."""
    if isinstance(value, str):
        return scrub_text(value, home, user)
    if isinstance(value, list):
        return [scrub(v, home, user) for v in value]
    if isinstance(value, dict):
        return {scrub_text(str(k), home, user): scrub(v, home, user) for k, v in value.items()}
    return value


def sanitized_copy(
    results: EvalResults, home: str | None = None, user: str | None = None
) -> EvalResults:
    """A copy of ``results`` with config and provenance scrubbed and the document re-digested.

    ``home`` and ``user`` default to this machine's (``local_identity``).
    """
    if home is None:
        home, found = local_identity()
        user = user if user is not None else found
    raw = results.model_dump(mode="json")
    raw["config"] = scrub(raw["config"], home, user)
    raw["provenance"] = scrub(raw["provenance"], home, user)
    out = EvalResults.model_validate(raw)
    out.document_sha256 = document_digest(out) if results.document_sha256 is not None else None
    return out
