"""Qwen2-VL: a ViT with 2 x 2 patch merging, M-RoPE positions, a Qwen2 LM (``tiny-qwen2-vl``).

Processor quirk: the stock ``Qwen2VLProcessor`` builds a video processor, which imports
torchvision; the harness feeds images only, so it ships an image-only subclass and names it in the
anatomy (``processor_class``), which ``load_vlm`` loads instead of the class a checkpoint names.
"""

from __future__ import annotations

from typing import Any

from transformers import AutoProcessor, Qwen2VLConfig, Qwen2VLProcessor

from mmrl_harness.models import tiny, vocab
from mmrl_harness.models.anatomy import Anatomy

#: How a Qwen chat template marks an image: the markers around the placeholder the processor expands.
IMAGE_MARKUP = vocab.VISION_START_TOKEN + vocab.QWEN_IMAGE_TOKEN + vocab.VISION_END_TOKEN


class Qwen2VLImageOnlyProcessor(Qwen2VLProcessor):
    """Qwen2-VL's processor without the video processor, which would import torchvision.

    Its ``__init__`` drops ``video_processor`` from the signature, because ``ProcessorMixin``
    derives the sub-processors to load from the parameter names.
    """

    def __init__(
        self,
        image_processor: Any = None,
        tokenizer: Any = None,
        chat_template: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


# Lets a plain ``AutoProcessor.from_pretrained`` resolve the class name written into the tiny
# Qwen2-VL's processor_config.json (Hub checkpoints name the stock class instead; see load_vlm).
AutoProcessor.register(Qwen2VLConfig, Qwen2VLImageOnlyProcessor, exist_ok=True)


def tokenizer() -> Any:
    """The tiny Qwen tokenizer: the shared vocabulary, ``<|image_pad|>`` as the image token."""
    return tiny.tokenizer(
        {"image_token": vocab.QWEN_IMAGE_TOKEN, "video_token": vocab.QWEN_VIDEO_TOKEN}
    )


def image_processor(image_size: int) -> Any:
    """The PIL Qwen-VL image processor cutting an ``image_size`` square into 8 x 8 patches."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    pixels = image_size * image_size
    return Qwen2VLImageProcessorPil(
        # min = max pixels: every image is resized to about image_size² pixels, so a square
        # image always gives IMAGE_TOKENS tokens (other aspect ratios give a few fewer).
        size={"shortest_edge": pixels, "longest_edge": pixels},
        patch_size=image_size // 8,
        temporal_patch_size=2,
        merge_size=2,
    )


def text_config() -> dict[str, Any]:
    """The shared tiny LM with M-RoPE: the rotary half-dimension split into (t, h, w) sections."""
    head_dim = tiny.TEXT_SIZES["hidden_size"] // tiny.TEXT_SIZES["num_attention_heads"]
    rope = {"rope_type": "default", "rope_theta": 10000.0}
    return tiny.text_config(
        rope_parameters={**rope, "mrope_section": tiny.mrope_section(head_dim // 2)}
    )


def special_token_ids() -> dict[str, Any]:
    """The Qwen-VL config's image, video and vision-marker token ids in the tiny vocabulary."""
    return {
        "image_token_id": tiny.token_id(vocab.QWEN_IMAGE_TOKEN),
        "video_token_id": tiny.token_id(vocab.QWEN_VIDEO_TOKEN),
        "vision_start_token_id": tiny.token_id(vocab.VISION_START_TOKEN),
        "vision_end_token_id": tiny.token_id(vocab.VISION_END_TOKEN),
    }


def build_tiny(image_size: int) -> tuple[Any, Any]:
    """Config and processor of ``tiny-qwen2-vl``: 8 x 8 patches merged 2 x 2 into 16 tokens."""
    config = Qwen2VLConfig(
        vision_config={
            "depth": 1,
            "embed_dim": tiny.VISION_WIDTH,
            "hidden_size": tiny.TEXT_SIZES["hidden_size"],  # the merger projects into the LM width
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": image_size // 8,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        text_config=text_config(),
        **special_token_ids(),
        tie_word_embeddings=False,
    )
    processor = Qwen2VLImageOnlyProcessor(
        image_processor=image_processor(image_size),
        tokenizer=tokenizer(),
        chat_template=tiny.chat_template(IMAGE_MARKUP),
    )
    return config, processor


QWEN2_VL = Anatomy(
    family="qwen2_vl",
    model_types=("qwen2_vl",),
    vision_tower="model.visual",
    projector="model.visual.merger",
    language_model="model.language_model",
    decoder_layers="model.language_model.layers",
    embed_tokens="model.language_model.embed_tokens",
    vision_hidden_size_attr="embed_dim",
    processor_class="mmrl_harness.models.families.qwen2_vl:Qwen2VLImageOnlyProcessor",
    tiny_model="tiny-qwen2-vl",
    build_tiny=build_tiny,
)
