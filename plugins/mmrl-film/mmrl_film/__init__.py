"""``film``: FiLM (feature-wise linear modulation) of the image tokens by the prompt's text.

At the language model's input every image token ``f`` of a sample becomes

    f' = f * (1 + gamma(c)) + beta(c),    c = LayerNorm(mean of the sample's prompt text tokens)

where ``gamma`` and ``beta`` are one linear map ``hidden -> 2 x hidden`` (or a two-layer MLP with
``bottleneck`` units) whose output layer starts at zero, so ``f' = f`` and the model is unchanged
at initialisation. Text tokens pass through untouched: the question decides *which image
features* the language model sees amplified, as in FiLM (Perez et al., 2018) for visual reasoning.

Correctness under padding and in training: ``c`` pools the *prompt's* real text tokens only. With
an mmrl-harness whose input-fusion call passes ``FusionInputs`` (attention and prompt masks), that
is exact: left padding and completion tokens never enter ``c``, so a row's output does not depend
on its batch, and a training forward over prompt + completion conditions the images exactly as
the ``generate()`` that sampled the completion. With an older harness (the call
``(inputs_embeds, image_mask, memory)``), padding is recognised by the pad token's embedding, but
completion tokens cannot be told from the prompt in a training forward: upgrade the harness.

Cost: one ``hidden -> 2 hidden`` matrix-vector product per sample (``flops_per_image``), nothing per
token; ``2 hidden² + 4 hidden`` parameters without a bottleneck.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn

from mmrl_harness.fusion.base import FusionCost, FusionOptions, require_part
from mmrl_harness.fusion.image_context import INPUT_FUSION_ATTR
from mmrl_harness.fusion.input_fusion import InputFusionAdapter
from mmrl_harness.models.anatomy import Anatomy

__all__ = ["FiLMFusion", "FiLMModulation", "FiLMOptions"]
__version__ = "0.1.0"


class FiLMOptions(FusionOptions):
    """Options of ``film``."""

    #: Hidden units of a two-layer generator ``hidden -> bottleneck -> 2 hidden``; None: one
    #: linear map ``hidden -> 2 hidden``.
    bottleneck: int | None = Field(default=None, gt=0)


class FiLMModulation(nn.Module):
    """The FiLM generator and the modulation it applies to image tokens."""

    def __init__(self, hidden: int, bottleneck: int | None) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        layers: list[nn.Module] = []
        width = hidden
        if bottleneck is not None:
            layers += [nn.Linear(hidden, bottleneck), nn.GELU()]
            width = bottleneck
        out = nn.Linear(width, 2 * hidden)
        nn.init.zeros_(out.weight)  # gamma = beta = 0: the identity at initialisation
        nn.init.zeros_(out.bias)
        self.generator = nn.Sequential(*layers, out)
        #: Embedding of the pad token, to recognise left padding under the legacy call; set by
        #: ``FiLMFusion`` at attach time (a buffer, so it follows the module's device and dtype).
        self.register_buffer("pad_embedding", torch.zeros(hidden), persistent=False)

    def forward(self, inputs: Any, *legacy: Any) -> torch.Tensor:
        """Modulate the image tokens; ``inputs`` is a ``FusionInputs`` (or, legacy, the embeddings)."""
        if legacy:  # (inputs_embeds, image_mask, memory) from a harness without FusionInputs
            embeds, image_mask = inputs, legacy[0]
            text = ~image_mask & ~(embeds == self.pad_embedding.to(embeds.dtype)).all(dim=-1)
        else:
            embeds, image_mask, text = (
                inputs.inputs_embeds,
                inputs.image_mask,
                inputs.prompt_text_mask,
            )
        if not bool(image_mask.any()):
            return embeds  # decode steps and text-only forwards carry no image token
        weights = text.to(embeds.dtype).unsqueeze(-1)
        pooled = (embeds * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        gamma, beta = self.generator(self.norm(pooled)).chunk(2, dim=-1)
        modulated = embeds * (1 + gamma[:, None, :]) + beta[:, None, :]
        return torch.where(image_mask[..., None], modulated, embeds)


class FiLMFusion(InputFusionAdapter):
    """FiLM: the pooled prompt text scales and shifts every image token (identity at init)."""

    name = "film"
    Options = FiLMOptions
    options: FiLMOptions

    def build_module(self, hidden: int) -> nn.Module:
        """The generator for a language model of width ``hidden``."""
        return FiLMModulation(hidden, self.options.bottleneck)

    def _attach(self, model: nn.Module, anatomy: Anatomy) -> None:
        super()._attach(model, anatomy)
        embed = require_part(model, anatomy, "embed_tokens", self.name)
        pad_id = getattr(anatomy.text_config(model), "pad_token_id", None)
        if pad_id is None:
            pad_id = getattr(model.config, "pad_token_id", None)
        module = getattr(
            require_part(model, anatomy, "language_model", self.name), INPUT_FUSION_ATTR
        )
        if pad_id is not None:
            with torch.no_grad():  # through the module, so scaled embeddings (Gemma) match
                module.pad_embedding.copy_(
                    embed(torch.tensor([pad_id], device=embed.weight.device))[0]
                )

    def cost(self, model: nn.Module, image_tokens: int, text_tokens: int) -> FusionCost:
        """The generator's matrix-vector products, once per sample; nothing per token."""
        module = self.fusion_module(model)
        macs = sum(
            layer.in_features * layer.out_features
            for layer in module.modules()
            if isinstance(layer, nn.Linear)
        )
        return FusionCost(
            trainable_params=self.trainable_params(model),
            image_tokens=image_tokens,
            text_tokens=text_tokens,
            flops_per_image=2 * macs,
            flops_per_token=0,
        )

    def log_values(self, model: nn.Module) -> dict[str, float]:
        """``film/generator_norm``: how far the modulation has moved from the identity."""
        module = self.fusion_module(model)
        assert isinstance(module, FiLMModulation)
        out = module.generator[-1]
        assert isinstance(out, nn.Linear)
        norm = torch.linalg.vector_norm(torch.cat([out.weight.flatten(), out.bias])).item()
        return {f"{self.name}/generator_norm": float(norm)}
