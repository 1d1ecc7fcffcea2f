"""Idefics3 (SmolVLM's architecture): SigLIP tower, pixel-shuffle connector, Llama LM (``tiny-idefics3``).

Quirks:
- The processor hard-codes its markup tokens (``<fake_token_around_image>``, ``<global-img>``,
  ``<end_of_utterance>``) and adds any that are missing to the tokenizer, which would give them
  ids past the model's vocabulary; the tiny tokenizer therefore appends them to the shared
  vocabulary itself. One ``<image>`` in the prompt becomes
  ``<fake_token_around_image><global-img>`` + 16 x ``<image>`` + ``<fake_token_around_image>``.
- Image splitting: Hub checkpoints cut a large image into tiles, each with its own block of image
  tokens (and ``<row_i_col_j>`` markers), plus a downscaled global view. The tiny build turns
  splitting off, so a 32 px image is one block of 16 tokens; fusion adapters read image tokens per
  sample by position, so tiled prompts work unchanged.
- Images are resized to their longest edge and zero-padded to a square; ``pixel_attention_mask``
  marks the real pixels, and ``pixel_values`` is 5-D ``(batch, images, channels, height, width)``.
"""

from __future__ import annotations

from typing import Any

from mmrl_harness.models import tiny, vocab
from mmrl_harness.models.anatomy import Anatomy

#: The processor's hard-coded markup tokens, appended to the tiny vocabulary.
MARKUP_TOKENS: tuple[str, ...] = ("<fake_token_around_image>", "<global-img>", "<end_of_utterance>")


def build_tiny(image_size: int) -> tuple[Any, Any]:
    """Config and processor of ``tiny-idefics3``: 8 x 8 patches, pixel-shuffled into 16 tokens."""
    from transformers import Idefics3Config, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import (
        Idefics3ImageProcessorPil,
    )

    tokenizer = tiny.tokenizer({"image_token": vocab.IMAGE_TOKEN}, extra_special=MARKUP_TOKENS)
    scale = 2  # the connector's pixel shuffle folds 2 x 2 patches into one token
    config = Idefics3Config(
        text_config={**tiny.text_config(len(tokenizer)), "model_type": "llama"},
        vision_config={
            "hidden_size": tiny.VISION_WIDTH,
            "intermediate_size": 2 * tiny.VISION_WIDTH,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": image_size // 8,
        },
        scale_factor=scale,
        image_token_id=tiny.token_id(vocab.IMAGE_TOKEN),
        tie_word_embeddings=False,
    )
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False,
        size={"longest_edge": image_size},
        max_image_size={"longest_edge": image_size},
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=(8 // scale) ** 2,
        chat_template=tiny.chat_template(vocab.IMAGE_TOKEN),
    )
    return config, processor


IDEFICS3 = Anatomy(
    family="idefics3",
    model_types=("idefics3",),
    vision_tower="model.vision_model",
    projector="model.connector",
    language_model="model.text_model",
    decoder_layers="model.text_model.layers",
    embed_tokens="model.text_model.embed_tokens",
    tiny_model="tiny-idefics3",
    build_tiny=build_tiny,
)
