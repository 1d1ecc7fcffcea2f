"""The root of every error the harness raises on purpose.

``MMRLError`` marks a problem with the user's input or environment that the harness has already
explained in its message (which file, which field, what to do instead). The CLI prints such an
error as one line and exits non-zero; anything else is a bug and keeps its traceback.
Subclasses also derive from the built-in exception a caller would expect (``ValueError``,
``KeyError``, ``RuntimeError``), so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class MMRLError(Exception):
    """Base class of every error the harness raises deliberately, with a message for the user."""


class InputError(MMRLError, ValueError):
    """A command-line option or argument is unusable (bad seeds, an unwritable output path...)."""
