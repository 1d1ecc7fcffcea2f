"""Fusion adapters: ways to fuse image and text inside a pretrained VLM.

The built-ins (``concat``, ``weighted_sum``, ``cross_attention``, ``mm_transformer``) register
through the ``mmrl_harness.fusion`` entry points like any third-party adapter; get one with
``attach_fusion(model, name, **options)``. Importing this package does not import torch.
"""

from mmrl_harness.fusion.base import (
    FusionAdapter,
    FusionAttachError,
    FusionCost,
    FusionError,
    FusionOptions,
    FusionOptionsError,
    attach_fusion,
    attached_adapter,
    validate_plugin,
)
from mmrl_harness.fusion.lora import apply_lora, fusion_lora_config

__all__ = [
    "FusionAdapter",
    "FusionAttachError",
    "FusionCost",
    "FusionError",
    "FusionOptions",
    "FusionOptionsError",
    "apply_lora",
    "attach_fusion",
    "attached_adapter",
    "fusion_lora_config",
    "validate_plugin",
]
