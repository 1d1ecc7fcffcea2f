"""``concat``: the VLM's own concatenation of projected image tokens with text tokens (baseline).

LLaVA-style models already fuse by concatenation: the projector maps vision features into the
language model's embedding space and those tokens replace the image placeholders in the text
sequence. This adapter adds nothing; it is the reference every other adapter is compared with,
and optionally trains the projector (the connector MM1 and LLaVA fine-tune) alongside LoRA.
"""

from __future__ import annotations

from torch import nn

from mmrl_harness.fusion.base import FusionAdapter, FusionCost, FusionOptions, require_part
from mmrl_harness.models.anatomy import Anatomy


class ConcatOptions(FusionOptions):
    """Options of ``concat``."""

    #: Train (and save with LoRA) the image projector: LLaVA's ``multi_modal_projector``,
    #: Qwen2-VL's ``visual.merger``.
    train_projector: bool = False


class ConcatFusion(FusionAdapter):
    """Baseline: keep the VLM's token concatenation; optionally make the projector trainable."""

    name = "concat"
    Options = ConcatOptions
    options: ConcatOptions

    def _attach(self, model: nn.Module, anatomy: Anatomy) -> None:
        projector = require_part(model, anatomy, "projector", self.name)
        if self.options.train_projector:
            projector.requires_grad_(True)

    def trainable_module_names(self, model: nn.Module) -> list[str]:
        """The projector when ``train_projector``, else nothing."""
        return [self.anatomy(model).projector] if self.options.train_projector else []

    def cost(self, model: nn.Module, image_tokens: int, text_tokens: int) -> FusionCost:
        """No extra FLOPs: the projector runs anyway; its parameters count when trained."""
        return FusionCost(
            trainable_params=self.trainable_params(model),
            image_tokens=image_tokens,
            text_tokens=text_tokens,
            flops_per_image=0,
            flops_per_token=0,
        )
