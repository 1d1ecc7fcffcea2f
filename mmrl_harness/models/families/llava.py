"""LLaVA: CLIP vision tower, an MLP projector, a Llama language model (``tiny-llava``).

The processor expands each ``<image>`` into one placeholder per image feature; the projector's
output replaces those placeholders in the language model's input.
"""

from __future__ import annotations

from typing import Any

from mmrl_harness.models import tiny, vocab
from mmrl_harness.models.anatomy import Anatomy


def tokenizer() -> Any:
    """The tiny LLaVA tokenizer: the shared vocabulary, ``<image>`` as the image token."""
    return tiny.tokenizer({"image_token": vocab.IMAGE_TOKEN})


def build_tiny(image_size: int) -> tuple[Any, Any]:
    """Config and processor of ``tiny-llava``: a 4 x 4 grid of CLIP patches, 16 image tokens."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    patch = image_size // 4
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=tiny.VISION_WIDTH,
            intermediate_size=2 * tiny.VISION_WIDTH,
            projection_dim=tiny.VISION_WIDTH,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=patch,
        ),
        text_config=LlamaConfig(**tiny.text_config(), tie_word_embeddings=False),
        image_token_index=tiny.token_id(vocab.IMAGE_TOKEN),
        # "default" drops CLIP's CLS feature: 4 x 4 patches give exactly IMAGE_TOKENS tokens.
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        image_seq_length=tiny.IMAGE_TOKENS,
        tie_word_embeddings=False,
    )
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer(),
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # the CLS token the strategy then drops
        chat_template=tiny.chat_template(vocab.IMAGE_TOKEN),
    )
    return config, processor


LLAVA = Anatomy(
    family="llava",
    model_types=("llava",),
    vision_tower="model.vision_tower",
    projector="model.multi_modal_projector",
    language_model="model.language_model",
    decoder_layers="model.language_model.layers",
    embed_tokens="model.language_model.embed_tokens",
    tiny_model="tiny-llava",
    build_tiny=build_tiny,
)
