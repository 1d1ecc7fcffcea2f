"""Prompt forwards of observations under fixed weights, computed once per distinct observation.

A rollout acts on every environment every turn, and while it collects, the weights do not
change; tasks with few states show the policy the same (frame, prompt) again and again (20
distinct observations among NumberLine's 256 turns per update). ``TurnMemo`` keeps, per distinct
observation, the processor's output (a ``ProcessedTurns`` row) and the prompt forward's outputs
(the answer position's logits and the value), so a turn that repeats an observation runs neither
the processor nor the model again.

The kept row is the one a forward over the whole turn's batch computes: a row's output does not
depend on the other rows of its batch. It can depend on the batch's left padding (float32
rounding, ~1e-6) when prompts differ in length; a memo lives for one rollout only, so its
numbers are those of that rollout's weights. Only the prompt forward (``logits_to_keep`` 1: the
``action_logits`` head and state values) is kept, and of its logits only the ``columns`` asked
for (the action words' token ids: a real vocabulary's full row is ~0.6 MB a turn); generate
mode's sampled answers are not kept.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from mmrl_harness.models.loading import LoadedVLM
    from mmrl_harness.policy_head import TurnModel
    from mmrl_harness.processed_turns import ProcessedTurns


@dataclass
class PromptForward:
    """The prompt forward of a batch of turns, one row per turn."""

    logits: torch.Tensor  # (B, 1, len(columns)) the answer position's logits of the columns
    values: torch.Tensor | None  # (B,) or None without a value head
    tokens: int  # the turns' tokens (prompt + image)
    processed: ProcessedTurns  # the turns' processor output


@dataclass
class _Entry:
    logits: torch.Tensor  # (1, len(columns))
    value: torch.Tensor | None  # () or None
    tokens: int
    row: dict[str, torch.Tensor]
    key: bytes


def observation_key(frame: np.ndarray, prompt: str) -> bytes:
    """A 16-byte digest equal for two observations when their frames and prompts are (a digest,
    so the memo does not keep a copy of every frame; collisions ~2^-128)."""
    digest = hashlib.blake2b(f"{frame.dtype}|{frame.shape}|{len(prompt)}|".encode(), digest_size=16)
    digest.update(prompt.encode())
    digest.update(np.ascontiguousarray(frame).data)
    return digest.digest()


@dataclass
class TurnMemo:
    """Prompt forwards by observation, for one set of weights (make a new one after a step).

    ``columns``: the vocabulary ids whose logits are kept (the action words'; none when only
    values are wanted).
    """

    columns: tuple[int, ...] = ()
    entries: dict[bytes, _Entry] = field(default_factory=dict)
    per_token: tuple[str, ...] = ()
    pad_id: int = 0
    usable: bool = True  # False once the processor's batch could not be split per turn
    forwarded: int = 0  # rows the model ran on (the rest came from the memo)

    def forward(
        self,
        model: TurnModel,
        loaded: LoadedVLM,
        frames: Sequence[np.ndarray],
        prompts: Sequence[str],
    ) -> PromptForward | None:
        """The prompt forward of these turns, running the processor and the model on the
        observations not seen yet only; ``None`` when the processor's output cannot be kept
        per turn (then the caller runs its own forward)."""
        from mmrl_harness.processed_turns import ProcessedTurns

        keys = [observation_key(f, p) for f, p in zip(frames, prompts, strict=True)]
        new: dict[bytes, int] = {}
        for i, key in enumerate(keys):
            if key not in self.entries and key not in new:
                new[key] = i
        if new and not self._add(model, loaded, frames, prompts, new):
            return None
        entries = [self.entries[k] for k in keys]
        values = [e.value for e in entries]
        return PromptForward(
            torch.stack([e.logits for e in entries]),
            None if values[0] is None else torch.stack(values),  # type: ignore[arg-type]
            sum(e.tokens for e in entries),
            ProcessedTurns(
                [e.row for e in entries], self.per_token, self.pad_id, [e.key for e in entries]
            ),
        )

    def _add(
        self,
        model: TurnModel,
        loaded: LoadedVLM,
        frames: Sequence[np.ndarray],
        prompts: Sequence[str],
        new: dict[bytes, int],
    ) -> bool:
        """Run the processor and the prompt forward on the new observations and keep them."""
        from mmrl_harness.policy_head import prompt_inputs, split_turns, with_answers

        if not self.usable:
            return False
        index = list(new.values())
        raw = prompt_inputs(loaded, [frames[i] for i in index], [prompts[i] for i in index])
        processed = split_turns(loaded, raw)
        if processed is None:
            self.usable = False
            return False
        self.per_token, self.pad_id = processed.per_token, processed.pad_id
        inputs, keep = with_answers(loaded, raw)
        logits, values = model(inputs, keep)
        logits = logits[:, :, list(self.columns)]
        tokens = inputs["attention_mask"].sum(1).tolist()
        self.forwarded += len(index)
        for j, key in enumerate(new):
            self.entries[key] = _Entry(
                logits[j],
                None if values is None else values[j],
                int(tokens[j]),
                processed.rows[j],
                processed.keys[j],
            )
        return True
