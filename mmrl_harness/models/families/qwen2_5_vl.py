"""Qwen2.5-VL: Qwen2-VL's layout with a windowed-attention ViT and a wider merger (``tiny-qwen2.5-vl``).

Quirks: like Qwen2-VL, the stock processor imports torchvision through its video processor, so an
image-only subclass is named in the anatomy. The vision tower alternates windowed and full
attention (``fullatt_block_indexes``); the tiny build has one block of each, so both paths run.
Its width is ``hidden_size`` (Qwen2-VL's is ``embed_dim``) and ``out_hidden_size`` is the LM's.
"""

from __future__ import annotations

from typing import Any

from transformers import AutoProcessor, Qwen2_5_VLConfig, Qwen2_5_VLProcessor

from mmrl_harness.models import tiny
from mmrl_harness.models.anatomy import Anatomy
from mmrl_harness.models.families import qwen2_vl


class Qwen2_5_VLImageOnlyProcessor(Qwen2_5_VLProcessor):
    """Qwen2.5-VL's processor without the video processor (which would import torchvision)."""

    def __init__(
        self,
        image_processor: Any = None,
        tokenizer: Any = None,
        chat_template: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


AutoProcessor.register(Qwen2_5_VLConfig, Qwen2_5_VLImageOnlyProcessor, exist_ok=True)


def build_tiny(image_size: int) -> tuple[Any, Any]:
    """Config and processor of ``tiny-qwen2.5-vl``: 8 x 8 patches merged 2 x 2 into 16 tokens."""
    patch = image_size // 8
    config = Qwen2_5_VLConfig(
        vision_config={
            "depth": 2,
            "hidden_size": tiny.VISION_WIDTH,
            "intermediate_size": 2 * tiny.VISION_WIDTH,
            "num_heads": 2,
            "out_hidden_size": tiny.TEXT_SIZES["hidden_size"],  # the merger projects into the LM
            "patch_size": patch,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            # Windows of 2 x 2 merged tokens (in pixels), so the 4 x 4 grid has 4 windows;
            # block 1 attends over the whole image, block 0 within windows.
            "window_size": 2 * 2 * patch,
            "fullatt_block_indexes": [1],
        },
        text_config=qwen2_vl.text_config(),
        **qwen2_vl.special_token_ids(),
        tie_word_embeddings=False,
    )
    processor = Qwen2_5_VLImageOnlyProcessor(
        image_processor=qwen2_vl.image_processor(image_size),
        tokenizer=qwen2_vl.tokenizer(),
        chat_template=tiny.chat_template(qwen2_vl.IMAGE_MARKUP),
    )
    return config, processor


QWEN2_5_VL = Anatomy(
    family="qwen2_5_vl",
    model_types=("qwen2_5_vl",),
    vision_tower="model.visual",
    projector="model.visual.merger",
    language_model="model.language_model",
    decoder_layers="model.language_model.layers",
    embed_tokens="model.language_model.embed_tokens",
    processor_class="mmrl_harness.models.families.qwen2_5_vl:Qwen2_5_VLImageOnlyProcessor",
    tiny_model="tiny-qwen2.5-vl",
    build_tiny=build_tiny,
)
