"""Turn a model's text into an action word, per the task's ``parser`` block.

A parser returns the action word it found, or None when the text holds none (an invalid action).
With an ``actions`` mapping the word must be one of its keys; without one (free-text answers)
any non-empty word or text is an action.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from mmrl_harness.tasks.schema import ParserSpec

# Words are runs of letters/digits (with inner ' or -), so "Left." and "left!" both give "left".
_WORD = re.compile(r"[^\W_]+(?:['-][^\W_]+)*")


def words(text: str) -> list[str]:
    """The words of ``text``, punctuation dropped."""
    return _WORD.findall(text)


def normalize(text: str, case_sensitive: bool = False) -> str:
    """Trim, collapse spaces, drop surrounding punctuation; lower-case unless case-sensitive."""
    text = re.sub(r"\s+", " ", text).strip().strip(" .,!?;:\"'")
    return text if case_sensitive else text.lower()


class ActionParser:
    """Parses text into an action word (or None) for one task."""

    def __init__(self, spec: ParserSpec, vocabulary: Collection[str] | None):
        self.spec = spec
        fold = (lambda w: w) if spec.case_sensitive else str.lower
        # Case-folded word -> the word as the task spells it.
        self._vocabulary = None if vocabulary is None else {fold(w): w for w in vocabulary}
        self._fold = fold
        self._pattern = re.compile(spec.pattern) if spec.pattern else None

    def __call__(self, text: str) -> str | None:
        """The action word in ``text``, or None when there is no valid one."""
        kind = self.spec.kind
        if kind == "first_word":
            found = words(text)
            candidate = found[0] if found else None
        elif kind == "first_action":
            candidate = next((w for w in words(text) if self._known(w)), None)
        elif kind == "exact":
            candidate = normalize(text, case_sensitive=True) or None
        else:
            assert self._pattern is not None
            match = self._pattern.search(text)
            candidate = (
                None
                if match is None
                else (match.group(1) if self._pattern.groups else match.group(0))
            )
            candidate = normalize(candidate, True) if candidate else None
        if candidate is None:
            return None
        if self._vocabulary is None:
            return self._fold(candidate)
        return self._vocabulary.get(self._fold(candidate))

    def _known(self, word: str) -> bool:
        return self._vocabulary is None or self._fold(word) in self._vocabulary
