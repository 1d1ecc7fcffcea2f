"""``mm_transformer``: a Perceiver-style resampler that re-encodes the image tokens the LM consumes.

A small transformer runs over each sample's image tokens before the language model:

1. ``latents`` learned queries read all image tokens of the sample (cross-attention + MLP);
2. ``depth`` self-attention blocks mix information among the latents;
3. every image token reads the latents back (cross-attention, Perceiver IO's decoder);

and the result is added through a zero-initialised gate: ``f' = f + tanh(g) * decode(f)``.
At initialisation the fused tokens equal the projector's, so the model is unchanged; training
learns a global, cross-token re-encoding of the image (what a Q-Former or Perceiver resampler
adds over a per-token MLP projector). The fused tokens keep the image token count, because the
processor already put that many placeholders in the prompt and Qwen2-VL's M-RoPE positions are
computed from them; a token-*reducing* resampler (Idefics2's 729 -> 64) would change the
pretrained model's input and so cannot start from its behaviour.

The fusion runs once per prompt (in the prefill); decode steps see the fused tokens through the
KV cache, so ``generate()`` costs nothing extra per new token.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from mmrl_harness.fusion.base import (
    FusionCost,
    FusionOptions,
    FusionOptionsError,
)
from mmrl_harness.fusion.blocks import (
    Attention,
    FeedForward,
    gate_values,
    zero_gate,
)
from mmrl_harness.fusion.image_context import FusionInputs, scatter_image_tokens
from mmrl_harness.fusion.input_fusion import InputFusionAdapter


class MultimodalTransformerOptions(FusionOptions):
    """Options of ``mm_transformer``."""

    #: Number of learned latent queries (Flamingo and BLIP-2 use 32 to 64).
    latents: int = Field(default=16, ge=1)
    #: Latent self-attention blocks between the read and the write-back.
    depth: int = Field(default=1, ge=0)
    #: Width of the latents and attention; None: the language model's hidden size.
    width: int | None = Field(default=None, ge=1)
    #: Attention heads; must divide the width.
    heads: int = Field(default=4, ge=1)
    #: Feed-forward expansion inside the resampler.
    ff_mult: int = Field(default=2, ge=1)


class _LatentBlock(nn.Module):
    """Pre-norm attention (to the latents themselves or to a context) + MLP, on the latents."""

    def __init__(self, width: int, context_dim: int, heads: int, ff_mult: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.attn = Attention(width, context_dim, width, heads)
        self.ff_norm = nn.LayerNorm(width)
        self.ff = FeedForward(width, ff_mult)

    def forward(
        self, latents: torch.Tensor, context: torch.Tensor | None, valid: torch.Tensor | None
    ) -> torch.Tensor:
        """Self-attention when ``context`` is None, else cross-attention to it."""
        normed = self.norm(latents)
        latents = latents + self.attn(normed, normed if context is None else context, valid)
        return latents + self.ff(self.ff_norm(latents))


class PerceiverResampler(nn.Module):
    """Latents read the image tokens, think, and are read back by each image token."""

    def __init__(
        self, hidden: int, width: int, num_latents: int, depth: int, heads: int, ff_mult: int
    ) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.randn(num_latents, width) * 0.02)
        self.image_norm = nn.LayerNorm(hidden)
        self.read = _LatentBlock(width, hidden, heads, ff_mult)
        self.blocks = nn.ModuleList(
            _LatentBlock(width, width, heads, ff_mult) for _ in range(depth)
        )
        self.latent_norm = nn.LayerNorm(width)
        self.write = Attention(hidden, width, width, heads, out_dim=hidden)
        self.gate = zero_gate()

    def forward(self, inputs: FusionInputs) -> torch.Tensor:
        """Replace the image tokens in ``inputs_embeds`` by their fused version (prefill only).

        Reads image tokens only (never text), so the result does not depend on padding or on
        completion tokens in the same forward.
        """
        embeds, image_mask, memory = inputs.inputs_embeds, inputs.image_mask, inputs.memory
        if memory is None or not bool(image_mask.any()):
            return embeds  # decode steps: the fused image tokens are already in the KV cache
        tokens = self.image_norm(memory.tokens.to(embeds.dtype))
        # repeat, not expand: an expanded view of a parameter under no_grad still claims
        # requires_grad without a grad_fn, which breaks torch.utils.flop_counter's module tracker.
        latents = self.latents.to(embeds.dtype)[None].repeat(tokens.shape[0], 1, 1)
        latents = self.read(latents, tokens, memory.valid)
        for block in self.blocks:
            latents = block(latents, None, None)
        update = self.write(tokens, self.latent_norm(latents))
        fused = memory.tokens + torch.tanh(self.gate) * update
        return scatter_image_tokens(embeds, image_mask, fused)

    def flops(self, image_tokens: int) -> int:
        """Matmul FLOPs for one sample with ``image_tokens`` image tokens."""
        num_latents = self.latents.shape[0]
        read = self.read.attn.flops(num_latents, image_tokens) + self.read.ff.flops(num_latents)
        think = sum(
            b.attn.flops(num_latents, num_latents) + b.ff.flops(num_latents)
            for b in self.blocks
            if isinstance(b, _LatentBlock)
        )
        return read + think + self.write.flops(image_tokens, num_latents)


class MultimodalTransformerFusion(InputFusionAdapter):
    """Perceiver-IO resampler over each sample's image tokens, gated into the LM's input."""

    name = "mm_transformer"
    Options = MultimodalTransformerOptions
    options: MultimodalTransformerOptions

    def build_module(self, hidden: int) -> nn.Module:
        """The resampler, checked against the language model's width."""
        opts = self.options
        width = opts.width or hidden
        if width % opts.heads:
            raise FusionOptionsError(
                f"mm_transformer: width {width} is not divisible by heads={opts.heads}; choose "
                "heads that divide the width (or set width)"
            )
        return PerceiverResampler(hidden, width, opts.latents, opts.depth, opts.heads, opts.ff_mult)

    def _module(self, model: nn.Module) -> PerceiverResampler:
        module = self.fusion_module(model)
        assert isinstance(module, PerceiverResampler)
        return module

    def cost(self, model: nn.Module, image_tokens: int, text_tokens: int) -> FusionCost:
        """Everything is paid once per sample's images; text tokens cost nothing extra."""
        return FusionCost(
            trainable_params=self.trainable_params(model),
            image_tokens=image_tokens,
            text_tokens=text_tokens,
            flops_per_image=self._module(model).flops(image_tokens) if image_tokens else 0,
            flops_per_token=0,
        )

    def log_values(self, model: nn.Module) -> dict[str, float]:
        """``mm_transformer/gate``: tanh of the residual gate."""
        return gate_values(self.name, self._module(model))
