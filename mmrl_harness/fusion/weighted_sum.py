"""``weighted_sum``: modality embeddings combined with learned, logged weighting coefficients.

At the language model's input every text token embedding becomes

    e'_t = w_text * e_t + w_image_to_text * mean(image tokens of its sample)

and every image token ``f`` becomes ``w_image * f``. The coefficients start at
``w_text = w_image = 1`` and ``w_image_to_text = 0``, so the model is unchanged at
initialisation; training learns how much each modality matters for the task, which is exactly
the number a researcher wants to read off (``log_values``). ``per_channel`` learns one
coefficient per hidden channel instead of one scalar (logged as the mean).

Decode steps of ``generate()`` get the pooled image of the prompt, as in training: every text
token, prompt or completion, is treated the same way. Cost: 3 scalars (or 3 x hidden), no
matrix multiplication.
"""

from __future__ import annotations

import torch
from torch import nn

from mmrl_harness.fusion.base import (
    FusionCost,
    FusionOptions,
)
from mmrl_harness.fusion.image_context import FusionInputs
from mmrl_harness.fusion.input_fusion import InputFusionAdapter


class WeightedSumOptions(FusionOptions):
    """Options of ``weighted_sum``."""

    #: One coefficient per hidden channel instead of one scalar per modality.
    per_channel: bool = False


class ModalityWeights(nn.Module):
    """The learned coefficients and the weighted sum they define."""

    def __init__(self, hidden: int, per_channel: bool) -> None:
        super().__init__()
        shape = (hidden,) if per_channel else ()
        self.text = nn.Parameter(torch.ones(shape))
        self.image = nn.Parameter(torch.ones(shape))
        self.image_to_text = nn.Parameter(torch.zeros(shape))

    def forward(self, inputs: FusionInputs) -> torch.Tensor:
        """Reweight ``inputs.inputs_embeds``: image positions by ``image``, text by the sum.

        It pools image tokens only (never text), so padding and completion tokens cannot leak
        into any other position.
        """
        embeds, memory = inputs.inputs_embeds, inputs.memory
        text = self.text * embeds
        if memory is not None:
            text = text + self.image_to_text * memory.pooled()[:, None, :].to(embeds.dtype)
        return torch.where(inputs.image_mask[..., None], self.image * embeds, text)

    def coefficients(self) -> dict[str, float]:
        """Current coefficients (means over channels when per-channel)."""
        return {
            "text": float(self.text.detach().float().mean()),
            "image": float(self.image.detach().float().mean()),
            "image_to_text": float(self.image_to_text.detach().float().mean()),
        }


class WeightedSumFusion(InputFusionAdapter):
    """Learned weighted sum of text, image, and pooled-image-into-text embeddings."""

    name = "weighted_sum"
    Options = WeightedSumOptions
    options: WeightedSumOptions

    def build_module(self, hidden: int) -> nn.Module:
        """Three coefficients (or 3 x hidden with ``per_channel``)."""
        return ModalityWeights(hidden, self.options.per_channel)

    def cost(self, model: nn.Module, image_tokens: int, text_tokens: int) -> FusionCost:
        """Three coefficients (or 3 x hidden); elementwise work only, so 0 matmul FLOPs."""
        return FusionCost(
            trainable_params=self.trainable_params(model),
            image_tokens=image_tokens,
            text_tokens=text_tokens,
            flops_per_image=0,
            flops_per_token=0,
        )

    def log_values(self, model: nn.Module) -> dict[str, float]:
        """``weighted_sum/text``, ``weighted_sum/image``, ``weighted_sum/image_to_text``."""
        module = self.fusion_module(model)
        assert isinstance(module, ModalityWeights)
        return {f"{self.name}/{k}": v for k, v in module.coefficients().items()}
