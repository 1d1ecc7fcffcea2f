"""``cross_attention``: Flamingo-style gated cross-attention blocks inserted into the decoder.

Before each chosen decoder layer, the hidden states of every position attend to the image tokens
of their own sample:

    y = y + tanh(a) * xattn(norm(y), norm(image tokens))
    y = y + tanh(b) * ffw(norm(y))

with ``a = b = 0`` at initialisation (Alayrac et al. 2022), so the model starts as the pretrained
VLM and learns how much of the image to re-read at depth. Samples without an image are left
untouched. The block is a child ``mmrl_xattn`` of the decoder layer, run by a forward pre-hook
that looks the child up at call time (so PEFT's trainable copy is the one that runs, and the
layer's own weights keep their names).

KV-cached ``generate()``: the image tokens are captured in the prefill forward and reused on every
decode step of the same call (``image_context``), row for row with the batch; so are each block's
image keys and values (``cache_image_kv``), which a decode step would otherwise recompute from the
same images at every block. The image tokens carry no positions here, so Qwen2-VL's M-RoPE is
unaffected.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from pydantic import Field
from torch import nn

from mmrl_harness.fusion.base import (
    FusionAdapter,
    FusionAttachError,
    FusionCost,
    FusionOptions,
    FusionOptionsError,
    active_module,
    base_model,
    require_part,
)
from mmrl_harness.fusion.blocks import (
    Attention,
    FeedForward,
    gate_values,
    like_embedding,
    zero_gate,
)
from mmrl_harness.fusion.image_context import ImageContext, ImageMemory, install_image_context
from mmrl_harness.models.anatomy import Anatomy, get_submodule

#: Child of a decoder layer holding its cross-attention block.
XATTN_ATTR = "mmrl_xattn"


class CrossAttentionOptions(FusionOptions):
    """Options of ``cross_attention``."""

    #: Decoder layers (0-based, negative counts from the end) that get a block before them.
    #: None: every ``every``-th layer starting at 0.
    layers: list[int] | None = None
    #: Spacing of blocks when ``layers`` is None (Flamingo used 1 to 7 depending on size).
    every: int = Field(default=4, ge=1)
    #: Attention width; None: the language model's hidden size.
    width: int | None = Field(default=None, ge=1)
    #: Attention heads; must divide the width.
    heads: int = Field(default=4, ge=1)
    #: Feed-forward expansion of the gated MLP; 0 leaves the MLP out.
    ff_mult: int = Field(default=2, ge=0)
    #: Compute each block's image keys/values once per ``generate()`` call (at the prefill) and
    #: reuse them on every decode step; False recomputes them at each step (the same numbers,
    #: slower: kept to measure the difference, see benchmarks/fusion_decode.py).
    cache_image_kv: bool = True


class GatedCrossAttentionBlock(nn.Module):
    """One gated cross-attention (+ gated MLP) block, identity at initialisation."""

    def __init__(
        self, hidden: int, width: int, heads: int, ff_mult: int, cache_image_kv: bool = True
    ) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.memory_norm = nn.LayerNorm(hidden)
        self.attn = Attention(hidden, hidden, width, heads)
        self.attn_gate = zero_gate()
        self.ff_norm = nn.LayerNorm(hidden) if ff_mult else None
        self.ff = FeedForward(hidden, ff_mult) if ff_mult else None
        self.ff_gate = zero_gate() if ff_mult else None
        self.cache_image_kv = cache_image_kv

    def image_keys_values(
        self, memory: ImageMemory, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of ``memory``'s image tokens (from the prefill on decode steps)."""

        def compute() -> tuple[torch.Tensor, torch.Tensor]:
            return self.attn.keys_values(self.memory_norm(memory.tokens.to(dtype)))

        return memory.reuse(self, compute) if self.cache_image_kv else compute()

    def forward(self, hidden: torch.Tensor, memory: ImageMemory) -> torch.Tensor:
        """``hidden`` (batch, seq, hidden) after reading its sample's image tokens."""
        k, v = self.image_keys_values(memory, hidden.dtype)
        # With every sample holding the same number of image tokens (the usual batch) there is no
        # padding to mask and no image-less sample to zero: skip both, they are whole-tensor ops.
        valid = None if memory.full else memory.valid
        attn_gate = torch.tanh(self.attn_gate)
        ff_gate = torch.tanh(self.ff_gate) if self.ff_gate is not None else None
        if not memory.full:
            # Zero the whole update of image-less samples: text-only behaviour stays the LM's own.
            keep = memory.has_image[:, None, None].to(hidden.dtype)
            attn_gate = attn_gate * keep
            ff_gate = ff_gate * keep if ff_gate is not None else None
        hidden = hidden + attn_gate * self.attn.attend(self.norm(hidden), k, v, valid)
        if self.ff is not None and self.ff_norm is not None and ff_gate is not None:
            hidden = hidden + ff_gate * self.ff(self.ff_norm(hidden))
        return hidden

    def flops(self, image_tokens: int) -> tuple[int, int]:
        """``(per image, per position)`` matmul FLOPs for a sample with ``image_tokens``."""
        per_image = self.attn.flops(0, image_tokens)  # K/V projections of the image tokens
        per_position = self.attn.flops(1, image_tokens) - per_image
        if self.ff is not None:
            per_position += self.ff.flops(1)
        return per_image, per_position


def _run_block(
    ctx: ImageContext, layer: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    block = layer._modules.get(XATTN_ATTR)
    if block is None or ctx.memory is None:
        return None
    if args:
        return (block(args[0], ctx.memory), *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": block(kwargs["hidden_states"], ctx.memory)}


class CrossAttentionFusion(FusionAdapter):
    """Gated cross-attention from text to image tokens at chosen decoder layers."""

    name = "cross_attention"
    Options = CrossAttentionOptions
    options: CrossAttentionOptions

    def resolve_layers(self, num_layers: int) -> list[int]:
        """The chosen layer indices for a decoder of ``num_layers``, checked and sorted."""
        opts = self.options
        if opts.layers is None:
            return list(range(0, num_layers, opts.every))
        if not opts.layers:
            raise FusionOptionsError(
                "cross_attention: layers=[] inserts no block; give at least one layer index "
                "or leave layers unset"
            )
        resolved: list[int] = []
        for index in opts.layers:
            if not -num_layers <= index < num_layers:
                raise FusionOptionsError(
                    f"cross_attention: layer index {index} is out of range for a decoder with "
                    f"{num_layers} layers (valid: {-num_layers}..{num_layers - 1})"
                )
            resolved.append(index % num_layers)
        duplicates = sorted({i for i in resolved if resolved.count(i) > 1})
        if duplicates:
            raise FusionOptionsError(
                f"cross_attention: layers={opts.layers} names decoder layer(s) {duplicates} "
                "more than once"
            )
        return sorted(resolved)

    def _attach(self, model: nn.Module, anatomy: Anatomy) -> None:
        decoder_layers = require_part(model, anatomy, "decoder_layers", self.name)
        if not isinstance(decoder_layers, nn.ModuleList):
            raise FusionAttachError(
                f"cross_attention needs the decoder layers of family {anatomy.family!r} as an "
                f"nn.ModuleList at {anatomy.decoder_layers!r}, found "
                f"{type(decoder_layers).__name__}; fix the family's anatomy"
            )
        require_part(model, anatomy, "language_model", self.name)
        embed = require_part(model, anatomy, "embed_tokens", self.name)
        hidden = int(anatomy.text_config(model).hidden_size)
        width = self.options.width or hidden
        if width % self.options.heads:
            raise FusionOptionsError(
                f"cross_attention: width {width} is not divisible by heads={self.options.heads}; "
                "choose heads that divide the width (or set width)"
            )
        indices = self.resolve_layers(len(decoder_layers))
        ctx = install_image_context(model, anatomy)
        for index in indices:
            layer = decoder_layers[index]
            block = GatedCrossAttentionBlock(
                hidden,
                width,
                self.options.heads,
                self.options.ff_mult,
                self.options.cache_image_kv,
            )
            layer.add_module(XATTN_ATTR, like_embedding(block, embed))
            ctx.handles.append(
                layer.register_forward_pre_hook(
                    functools.partial(_run_block, ctx), with_kwargs=True
                )
            )

    def trainable_module_names(self, model: nn.Module) -> list[str]:
        """One block per chosen decoder layer."""
        anatomy = self.anatomy(model)
        layers = get_submodule(base_model(model), anatomy.decoder_layers)
        return [
            f"{anatomy.decoder_layers}.{i}.{XATTN_ATTR}"
            for i, layer in enumerate(layers)
            if XATTN_ATTR in layer._modules
        ]

    def _blocks(self, model: nn.Module) -> dict[str, GatedCrossAttentionBlock]:
        base = base_model(model)
        out = {}
        for path in self.trainable_module_names(base):
            block = active_module(get_submodule(base, path))
            assert isinstance(block, GatedCrossAttentionBlock)
            out[path.split(".")[-2]] = block  # the layer index
        return out

    def cost(self, model: nn.Module, image_tokens: int, text_tokens: int) -> FusionCost:
        """Per block: K/V of the image tokens once; Q/out, attention and MLP at every position."""
        per_image = per_token = 0
        for block in self._blocks(model).values():
            image, token = block.flops(image_tokens)
            per_image += image
            per_token += token
        return FusionCost(
            trainable_params=self.trainable_params(model),
            image_tokens=image_tokens,
            text_tokens=text_tokens,
            flops_per_image=per_image,
            flops_per_token=per_token,
        )

    def log_values(self, model: nn.Module) -> dict[str, float]:
        """``tanh`` of each block's gates, e.g. ``cross_attention/layer_4/attn_gate``."""
        values: dict[str, float] = {}
        for index, block in self._blocks(model).items():
            values.update(gate_values(f"{self.name}/layer_{index}", block))
        return values
