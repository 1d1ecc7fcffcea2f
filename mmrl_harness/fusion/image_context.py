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

The input-fusion module is called with one ``FusionInputs``: the embeddings, which positions are
image tokens, which are real (not padding), which are prompt (not completion), and the memory.
Which positions are prompt is known from the call: a ``generate()`` prefill is all prompt and its
decode steps all completion; a training forward over prompt + completion (TRL's GRPO, the
episodic PPO) declares where the completion starts with ``completion_boundary``.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


@dataclass(frozen=True)
class FusionInputs:
    """What an input-fusion module (the language model's ``mmrl_fusion`` child) is called with.

    All masks are ``(batch, seq)`` bool over the positions of *this* forward (on a KV-cached
    decode step: the new positions only). A module returns the new ``inputs_embeds``.
    """

    #: ``(batch, seq, hidden)``: the language model's input embeddings (image tokens in place).
    inputs_embeds: torch.Tensor
    #: True at image-token positions.
    image_mask: torch.Tensor
    #: True at real tokens, False at padding (the model's ``attention_mask``; all True without).
    attention_mask: torch.Tensor
    #: True at real prompt tokens (image tokens included); False at padding and at completion
    #: tokens. Anything that conditions on the text must pool over this mask only: pooling
    #: padding makes results depend on the batch, pooling the completion leaks the answer into
    #: the prompt during training (and makes training log-probs differ from generation's).
    prompt_mask: torch.Tensor
    #: Each sample's image tokens (this forward's, or on decode steps the prefill's); None when
    #: no sample of the batch has an image.
    memory: ImageMemory | None
    #: True on a KV-cached decode step of ``generate()``: the prompt is in the cache already.
    decoding: bool = False

    @property
    def completion_mask(self) -> torch.Tensor:
        """True at real completion tokens (generated, or appended for scoring in training)."""
        return self.attention_mask & ~self.prompt_mask

    @property
    def prompt_text_mask(self) -> torch.Tensor:
        """True at real prompt tokens that are text (not image tokens)."""
        return self.prompt_mask & ~self.image_mask

    def pooled_prompt_text(self) -> torch.Tensor:
        """``(batch, hidden)`` mean embedding of each sample's prompt text (zeros when none).

        Independent of left padding and of any completion tokens in the same forward.
        """
        weights = self.prompt_text_mask.to(self.inputs_embeds.dtype)
        count = weights.sum(dim=1, keepdim=True).clamp(min=1.0)
        return (self.inputs_embeds * weights.unsqueeze(-1)).sum(dim=1) / count


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
        #: ``attention_mask`` the VLM received for the forward in progress (None: no padding).
        self.attention_mask: torch.Tensor | None = None
        #: Positions before this index are prompt, from ``completion_boundary``; None: the whole
        #: forward is prompt (a ``generate()`` prefill, an evaluation forward).
        self.prompt_length: int | None = None
        #: The ``FusionInputs`` of the forward in progress, for adapters that act inside the
        #: language model (e.g. at decoder layers) and need its masks.
        self.inputs: FusionInputs | None = None
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


def image_context(model: nn.Module) -> ImageContext | None:
    """The ``ImageContext`` installed in ``model`` (PEFT-wrapped or not), or None."""
    for module in model.modules():
        ctx = getattr(module, CONTEXT_ATTR, None)
        if isinstance(ctx, ImageContext):
            return ctx
    return None


@contextmanager
def completion_boundary(model: nn.Module, prompt_length: int) -> Iterator[None]:
    """Within the block, forwards of ``model`` treat positions ``>= prompt_length`` as completion.

    For a training forward over ``prompt + completion`` (prompts left-padded to one length,
    completions appended): fusion then conditions on the prompt only, exactly as in the
    ``generate()`` that produced the completion. A model without fusion hooks is unaffected.
    """
    ctx = image_context(model)
    if ctx is None:
        yield
        return
    previous, ctx.prompt_length = ctx.prompt_length, prompt_length
    try:
        yield
    finally:
        ctx.prompt_length = previous


def _cache_length(kwargs: dict[str, Any]) -> int:
    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    get_length = getattr(cache, "get_seq_length", None)
    return int(get_length()) if callable(get_length) else 0


def _inner_pre_hook(
    ctx: ImageContext, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    ctx.decoding = _cache_length(kwargs) > 0
    mask = kwargs.get("attention_mask")
    ctx.attention_mask = mask if isinstance(mask, torch.Tensor) and mask.ndim == 2 else None
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
    ctx.inputs = _fusion_inputs(ctx, embeds, mask)
    fusion = module._modules.get(INPUT_FUSION_ATTR)
    if fusion is None:
        return None
    legacy = _legacy_signature(fusion)
    fused = fusion(embeds, mask, ctx.memory) if legacy else fusion(ctx.inputs)
    return args, {**kwargs, "inputs_embeds": fused}


def _fusion_inputs(
    ctx: ImageContext, embeds: torch.Tensor, image_mask: torch.Tensor
) -> FusionInputs:
    """The masks of this forward: real tokens from the attention mask, prompt from the boundary."""
    batch, seq = image_mask.shape
    attention = ctx.attention_mask
    if attention is not None and attention.shape[0] == batch and attention.shape[1] >= seq:
        # On decode steps the mask covers cache + new positions; keep the new ones.
        real = attention[:, -seq:].to(device=image_mask.device, dtype=torch.bool)
    else:
        real = torch.ones_like(image_mask)
    if ctx.decoding:
        prompt = torch.zeros_like(image_mask)
    elif ctx.prompt_length is not None:
        positions = torch.arange(seq, device=image_mask.device)
        prompt = real & (positions < ctx.prompt_length)[None, :]
    else:
        prompt = real
    return FusionInputs(embeds, image_mask, real, prompt, ctx.memory, ctx.decoding)


#: Per fusion-module class: True when its ``forward`` is the plugin-API-1 legacy
#: ``(inputs_embeds, image_mask, memory)``; decided (and warned about) once per class.
_LEGACY: dict[type, bool] = {}


def _legacy_signature(fusion: nn.Module) -> bool:
    # PEFT's ModulesToSaveWrapper forwards ``*args``: inspect the module that actually runs.
    copies = getattr(fusion, "modules_to_save", None)
    active = getattr(fusion, "active_adapters", None)
    inner = copies[active[0]] if copies is not None and active else fusion
    cls = type(inner)
    if cls not in _LEGACY:
        params = [
            p
            for p in inspect.signature(inner.forward).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        _LEGACY[cls] = len(params) >= 3
        if _LEGACY[cls]:
            warnings.warn(
                f"{cls.__qualname__}.forward(inputs_embeds, image_mask, memory) is the old "
                "input-fusion signature: it gets no attention mask and no prompt/completion "
                "boundary, so text it pools includes padding and, in training, the completion. "
                "Accept one mmrl_harness.fusion.image_context.FusionInputs argument instead "
                "(see docs/fusion.md, 'The input-fusion call').",
                FutureWarning,
                stacklevel=2,
            )
    return _LEGACY[cls]
