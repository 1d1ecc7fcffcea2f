"""The processor's output for a batch of turns, kept per turn so any subset can be re-batched.

Acting builds every turn's model inputs with the processor (image preprocessing, chat template,
tokenization, image-token expansion); the episodic update scores the same turns again, in
``ppo_epochs`` x ``num_minibatches`` other groupings. ``ProcessedTurns`` keeps what the
processor returned while acting, one entry per turn with its padding removed, and ``batch``
re-pads any selection of turns the way the processor pads a batch (left, to the longest prompt,
with the tokenizer's pad id and a zero mask), so the update gets the very tensors the processor
would return for that minibatch without running it again (tested equal, key by key).

Which dimension of each tensor is per turn follows from the batch itself:

- per-token tensors (``input_ids``, ``attention_mask``, Qwen2-VL's ``mm_token_type_ids``): the
  first two dimensions are the batch's ``input_ids`` shape;
- Qwen2-VL's flattened ``pixel_values``: one block of ``prod(image_grid_thw[i])`` patch rows per
  turn (one image per turn, as ``build_inputs`` asks);
- everything else with one row per turn (LLaVA's ``pixel_values``, ``image_grid_thw``).

A batch with any other tensor (or none of these shapes) is not split: ``split`` returns ``None``
and the caller runs the processor as before.

Each turn also has a ``key``: a digest of all its tensors (names, dtypes, shapes, values). Two
turns with equal keys are the same model input, so ``distinct`` lets a forward pass run once per
distinct turn (tasks with few states repeat observations: 20 distinct ones among NumberLine's 256
turns per update) and hand each turn its row of the output.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

_PER_TOKEN_PAD = {"attention_mask": 0}  # input_ids: the tokenizer's pad id; anything else: 0


@dataclass
class ProcessedTurns:
    """Processor outputs of turns, one dict of CPU tensors per turn (no padding)."""

    rows: list[dict[str, torch.Tensor]]
    per_token: tuple[str, ...]  # keys padded along the sequence when batched
    pad_id: int  # the tokenizer's pad id, what ``input_ids`` is left-padded with
    keys: list[bytes] = field(default_factory=list)  # one per row (``row_key``); filled if empty

    def __post_init__(self) -> None:
        if len(self.keys) != len(self.rows):
            self.keys = [row_key(r) for r in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    @staticmethod
    def split(inputs: Mapping[str, Any], pad_id: int) -> ProcessedTurns | None:
        """Per-turn pieces of a left-padded processor batch; ``None`` when a key does not fit."""
        ids, mask = inputs.get("input_ids"), inputs.get("attention_mask")
        if not isinstance(ids, torch.Tensor) or not isinstance(mask, torch.Tensor):
            return None
        size = len(ids)
        if mask.shape != ids.shape:
            return None
        lengths = mask.sum(1).cpu()
        left_padded = torch.arange(ids.shape[1]) >= (ids.shape[1] - lengths)[:, None]
        if not torch.equal(mask.cpu().bool(), left_padded):
            return None  # not left-padded with a contiguous mask: re-batching could not match
        per_token = tuple(k for k, v in inputs.items() if _is_per_token(v, ids.shape))
        rows: list[dict[str, torch.Tensor]] = [{} for _ in range(size)]
        counts = lengths.tolist()
        for key, value in inputs.items():
            # One device-to-host copy per tensor, then views of it per turn.
            value = value.cpu() if isinstance(value, torch.Tensor) else value
            pieces = _pieces(key, value, inputs, ids.shape, counts)
            if pieces is None:
                return None
            for row, piece in zip(rows, pieces, strict=True):
                row[key] = piece
        return ProcessedTurns(rows, per_token, pad_id)

    def select(self, rows: Sequence[int] | torch.Tensor) -> ProcessedTurns:
        """The given turns."""
        index = [int(i) for i in rows]
        return ProcessedTurns(
            [self.rows[i] for i in index],
            self.per_token,
            self.pad_id,
            [self.keys[i] for i in index],
        )

    @staticmethod
    def concat(parts: Sequence[ProcessedTurns]) -> ProcessedTurns:
        """All turns of ``parts`` in order (the parts come from the same processor)."""
        return ProcessedTurns(
            [r for p in parts for r in p.rows],
            parts[0].per_token,
            parts[0].pad_id,
            [k for p in parts for k in p.keys],
        )

    def distinct(self, extra: Sequence[bytes] | None = None) -> tuple[list[int], torch.Tensor]:
        """The first turn of each distinct input, and for every turn the index of its distinct
        turn in that list: ``select(first)`` then row ``inverse[i]`` of its output is turn ``i``.

        ``extra`` (one per turn) joins the key, for what is appended to the processor's inputs
        (the answer tokens in generate mode). ``select(first)`` pads to the same width as the
        whole selection: the longest turn is among the distinct ones.
        """
        keys = (
            self.keys if extra is None else [k + e for k, e in zip(self.keys, extra, strict=True)]
        )
        slot: dict[bytes, int] = {}
        first: list[int] = []
        inverse = []
        for i, key in enumerate(keys):
            if key not in slot:
                slot[key] = len(first)
                first.append(i)
            inverse.append(slot[key])
        return first, torch.tensor(inverse, dtype=torch.long)

    def batch(self, device: torch.device | str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """The turns as the processor batches them: left-padded to the longest, on ``device``,
        floating tensors in ``dtype`` (``build_inputs``'s cast)."""
        width = max(len(r["input_ids"]) for r in self.rows)
        out: dict[str, torch.Tensor] = {}
        for key in self.rows[0]:
            parts = [r[key] for r in self.rows]
            if key in self.per_token:
                pad = self.pad_id if key == "input_ids" else _PER_TOKEN_PAD.get(key, 0)
                value = torch.stack([_left_pad(p, width, pad) for p in parts])
            else:
                value = torch.cat(parts)
            floating = value.is_floating_point()
            out[key] = value.to(device, dtype) if floating else value.to(device)
        return out


def row_key(row: Mapping[str, torch.Tensor]) -> bytes:
    """A 16-byte digest equal for two turns when their tensors are (names, dtypes, shapes,
    values); a digest rather than the bytes themselves, so a rollout of 336-px frames does not
    hold a second copy of its pixels (two different turns collide with probability ~2^-128)."""
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(row):
        value = row[name].contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        if value.numel():
            digest.update(value.view(torch.uint8).numpy().data)
    return digest.digest()


def _pieces(
    key: str,
    value: Any,
    inputs: Mapping[str, Any],
    shape: torch.Size,
    lengths: list[int],
) -> list[torch.Tensor] | None:
    """``value`` cut into one piece per turn (see the module docstring), or ``None``."""
    if not isinstance(value, torch.Tensor):
        return None
    size, width = shape
    if _is_per_token(value, shape):
        return [value[i, width - n :] for i, n in enumerate(lengths)]
    grid = inputs.get("image_grid_thw")
    if key == "pixel_values" and isinstance(grid, torch.Tensor) and len(grid) == size:
        counts = grid.prod(-1).tolist()
        if sum(counts) != len(value):
            return None
        return list(torch.split(value, counts))
    if value.ndim >= 1 and len(value) == size:
        return [value[i : i + 1] for i in range(size)]
    return None


def _is_per_token(value: Any, shape: torch.Size) -> bool:
    """Token ids, masks and token types: integer tensors shaped ``(batch, sequence, ...)``."""
    return (
        isinstance(value, torch.Tensor)
        and not value.is_floating_point()
        and value.ndim >= 2
        and value.shape[:2] == shape
    )


def _left_pad(row: torch.Tensor, width: int, value: int) -> torch.Tensor:
    """``row`` (sequence first) padded on the left to ``width``."""
    missing = width - len(row)
    if not missing:
        return row
    return torch.cat([row.new_full((missing, *row.shape[1:]), value), row])
