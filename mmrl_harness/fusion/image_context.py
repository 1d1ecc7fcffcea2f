"""Each sample's image tokens at the language model's input, kept across KV-cached decode steps.

Every built-in adapter needs the same thing: the projected image tokens of each sample, grouped
per sample and padded into a batch, and on ``generate()`` decode steps (which carry no image
tokens) the tokens captured at the prefill of the same call. Reading them where they enter the
language model (the ``inputs_embeds`` at image-placeholder positions) works the same for every
family: LLaVA's batched ``(images, tokens, hidden)`` projector output and Qwen2-VL's flattened
``(all_tokens, hidden)`` merger output both end up there, in sample order, and Qwen2-VL's M-RoPE
position ids are computed from ``input_ids`` afterwards, untouched because the token count is.

Two forward pre-hooks do it. Hooks are plain functions that look up the adapter's module by
attribute *at call time*, so after PEFT swaps that attribute for a ``ModulesToSaveWrapper`` the
trainable copy runs (a closure over the module would keep calling the frozen original):

- on the VLM's inner model (the parent of the language model: it sees ``input_ids`` and the
  cache; the top-level ``forward`` is not hooked because PEFT calls it as ``model.forward``): note
  where the image tokens are and whether this is a decode step;
- on the language model: gather the image tokens into an ``ImageMemory``, keep it for the decode
  steps, and let an input-fusion module (child ``mmrl_fusion``) rewrite ``inputs_embeds``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn

from mmrl_harness.models.anatomy import Anatomy, get_submodule

#: Child of the language model that rewrites ``inputs_embeds`` (weighted_sum, mm_transformer).
INPUT_FUSION_ATTR = "mmrl_fusion"
#: Attribute of the inner VLM model holding its ``ImageContext``.
CONTEXT_ATTR = "_mmrl_image_context"

_T = TypeVar("_T")


@dataclass
class ImageMemory:
    """The image tokens of each sample of a batch, zero-padded to the longest."""

    #: ``(batch, max_image_tokens, hidden)``.
    tokens: torch.Tensor
    #: ``(batch, max_image_tokens)``, True where a real image token is.
    valid: torch.Tensor
    #: True when every sample has the same (non-zero) number of image tokens, so ``valid`` is all
    #: True: attention can skip the key mask and blocks the per-sample "has an image" zeroing.
    full: bool = False
    #: Values derived from these tokens by a module (e.g. a block's image keys/values), see
    #: ``reuse``. A new prefill builds a new ``ImageMemory``, so they never outlive their images.
    derived: dict[nn.Module, Any] = field(default_factory=dict, repr=False)

    def reuse(self, owner: nn.Module, compute: Callable[[], _T]) -> _T:
        """``compute()`` once per memory and ``owner`` while gradients are off, else each call.

        ``generate()`` runs without gradients: its decode steps then reuse what the prefill
        computed from the images. With gradients every forward computes afresh, so autograd (and
        gradient checkpointing's recomputation) always sees a graph built by the current weights.
        """
        if torch.is_grad_enabled():
            return compute()
        if owner not in self.derived:
            self.derived[owner] = compute()
        return self.derived[owner]  # type: ignore[no-any-return]

    @property
    def has_image(self) -> torch.Tensor:
        """``(batch,)`` bool: which samples have at least one image token."""
        return self.valid.any(dim=1)

    def pooled(self) -> torch.Tensor:
        """``(batch, hidden)`` mean of each sample's image tokens (zeros without an image)."""
        weights = self.valid.to(self.tokens.dtype)
        count = weights.sum(dim=1, keepdim=True).clamp(min=1.0)
        return (self.tokens * weights.unsqueeze(-1)).sum(dim=1) / count


def gather_image_tokens(embeds: torch.Tensor, image_mask: torch.Tensor) -> ImageMemory:
    """Group the ``(batch, seq, hidden)`` embeddings at ``image_mask`` per sample, padded."""
    counts = image_mask.sum(dim=1)
    width = int(counts.max()) if counts.numel() else 0
    rank = image_mask.long().cumsum(dim=1) - 1  # position of each image token within its sample
    rows, cols = image_mask.nonzero(as_tuple=True)
    tokens = embeds.new_zeros(embeds.shape[0], width, embeds.shape[-1])
    tokens = tokens.index_put((rows, rank[rows, cols]), embeds[rows, cols])
    valid = torch.arange(width, device=embeds.device)[None, :] < counts[:, None]
    full = width > 0 and bool((counts == width).all())
    return ImageMemory(tokens=tokens, valid=valid, full=full)


def scatter_image_tokens(
    embeds: torch.Tensor, image_mask: torch.Tensor, tokens: torch.Tensor
) -> torch.Tensor:
    """Inverse of ``gather_image_tokens``: write per-sample ``tokens`` back at ``image_mask``."""
    rank = image_mask.long().cumsum(dim=1) - 1
    rows, cols = image_mask.nonzero(as_tuple=True)
    return embeds.index_put((rows, cols), tokens[rows, rank[rows, cols]].to(embeds.dtype))


class ImageContext:
    """State shared by one model's fusion hooks (plain object: it holds tensors, not weights)."""

    def __init__(self, image_token_id: int) -> None:
        self.image_token_id = image_token_id
        #: Image-token positions of the forward in progress, set by the inner-model hook.
        self.image_mask: torch.Tensor | None = None
        #: Whether the forward in progress continues a KV cache (a decode step).
        self.decoding = False
        #: Image tokens of the current forward, or of the prefill this decode step continues.
        self.memory: ImageMemory | None = None
        #: Handles of the hooks registered for this model (``handle.remove()`` detaches).
        self.handles: list[Any] = []


def install_image_context(model: nn.Module, anatomy: Anatomy) -> ImageContext:
    """The model's ``ImageContext``, registering its two hooks on first use."""
    lm_path = anatomy.language_model
    inner = get_submodule(model, lm_path.rpartition(".")[0]) if "." in lm_path else model
    existing = getattr(inner, CONTEXT_ATTR, None)
    if existing is not None:
        return existing  # type: ignore[no-any-return]
    ctx = ImageContext(anatomy.image_token_id(model))
    language_model = get_submodule(model, lm_path)
    ctx.handles.append(
        inner.register_forward_pre_hook(functools.partial(_inner_pre_hook, ctx), with_kwargs=True)
    )
    ctx.handles.append(
        language_model.register_forward_pre_hook(
            functools.partial(_language_model_pre_hook, ctx), with_kwargs=True
        )
    )
    setattr(inner, CONTEXT_ATTR, ctx)
    return ctx


def _cache_length(kwargs: dict[str, Any]) -> int:
    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    get_length = getattr(cache, "get_seq_length", None)
    return int(get_length()) if callable(get_length) else 0


def _inner_pre_hook(
    ctx: ImageContext, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    ctx.decoding = _cache_length(kwargs) > 0
    input_ids = kwargs.get("input_ids", args[0] if args else None)
    if input_ids is not None:
        ctx.image_mask = input_ids == ctx.image_token_id
        return
    embeds = kwargs.get("inputs_embeds")
    if embeds is None:
        ctx.image_mask = None
        return
    # Without ids, find placeholders the way transformers does: rows equal to the token's embedding.
    image_id = torch.tensor(ctx.image_token_id, device=embeds.device)
    placeholder = module.get_input_embeddings()(image_id)  # type: ignore[operator]
    ctx.image_mask = (embeds == placeholder).all(dim=-1)


def _language_model_pre_hook(
    ctx: ImageContext, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    embeds = kwargs.get("inputs_embeds")
    mask, ctx.image_mask = ctx.image_mask, None
    if embeds is None or mask is None or mask.shape != embeds.shape[:2]:
        # The language model was called on its own (text only): no image to fuse.
        ctx.memory = None
        return None
    if bool(mask.any()):
        ctx.memory = gather_image_tokens(embeds, mask)
    elif not ctx.decoding:
        ctx.memory = None  # a fresh text-only forward must not see an earlier call's images
    elif ctx.memory is not None and ctx.memory.tokens.shape[0] != embeds.shape[0]:
        raise RuntimeError(
            f"fusion: decode step has batch {embeds.shape[0]} but the prefill's images were "
            f"captured for batch {ctx.memory.tokens.shape[0]}; generation strategies that change "
            "the batch between steps are not supported with fusion adapters"
        )
    fusion = module._modules.get(INPUT_FUSION_ATTR)
    if fusion is None:
        return None
    return args, {**kwargs, "inputs_embeds": fusion(embeds, mask, ctx.memory)}
