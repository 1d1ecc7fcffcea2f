"""Gemma 3: SigLIP tower, an average-pooling projector, a Gemma 3 LM (``tiny-gemma3``).

Quirks:
- The prompt marks an image with the begin-of-image token; the processor replaces it with
  ``<boi>`` + ``mm_tokens_per_image`` x ``<image>`` + ``<eoi>``, and returns ``token_type_ids``
  (1 at image tokens), with which the language model lets image tokens attend to each other
  bidirectionally. The tiny build maps ``<boi>``/``<eoi>`` onto the shared vocabulary's vision
  start/end markers and ``<image>`` onto its image token.
- The stock processor reads a flat list of images as the images of *one* prompt, where every
  other family's reads one image per prompt; ``Gemma3OneImagePerPromptProcessor`` nests a flat
  list with one image per prompt, so ``build_inputs`` works unchanged.
- The projector average-pools the vision patches down to ``mm_tokens_per_image`` tokens, and the
  token embedding scales by sqrt(hidden size) inside ``embed_tokens``.
- Text layers alternate sliding-window and full attention (``layer_types``).
"""

from __future__ import annotations

from typing import Any

from transformers import AutoProcessor, Gemma3Config, Gemma3Processor

from mmrl_harness.models import tiny, vocab
from mmrl_harness.models.anatomy import Anatomy


class Gemma3OneImagePerPromptProcessor(Gemma3Processor):
    """Gemma 3's processor, reading a flat image list as one image per prompt when counts match."""

    def __call__(self, images: Any = None, text: Any = None, **kwargs: Any) -> Any:
        """As ``Gemma3Processor``, with ``images=[a, b]`` for ``text=[p, q]`` meaning ``[[a], [b]]``."""
        if (
            isinstance(images, (list, tuple))
            and isinstance(text, (list, tuple))
            and len(text) > 1
            and len(images) == len(text)
            and not any(isinstance(image, (list, tuple)) for image in images)
        ):
            images = [[image] for image in images]
        return super().__call__(images=images, text=text, **kwargs)


AutoProcessor.register(Gemma3Config, Gemma3OneImagePerPromptProcessor, exist_ok=True)


def build_tiny(image_size: int) -> tuple[Any, Any]:
    """Config and processor of ``tiny-gemma3``: 8 x 8 SigLIP patches pooled into 16 tokens."""
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    tokenizer = tiny.tokenizer(
        {
            "image_token": vocab.IMAGE_TOKEN,
            "boi_token": vocab.VISION_START_TOKEN,
            "eoi_token": vocab.VISION_END_TOKEN,
        }
    )
    sizes = tiny.TEXT_SIZES
    config = Gemma3Config(
        text_config=tiny.text_config(
            head_dim=sizes["hidden_size"] // sizes["num_attention_heads"],
            sliding_window=64,
            layer_types=["sliding_attention", "full_attention"],
        ),
        vision_config={
            "hidden_size": tiny.VISION_WIDTH,
            "intermediate_size": 2 * tiny.VISION_WIDTH,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": image_size // 8,
        },
        mm_tokens_per_image=tiny.IMAGE_TOKENS,
        image_token_index=tiny.token_id(vocab.IMAGE_TOKEN),
        boi_token_index=tiny.token_id(vocab.VISION_START_TOKEN),
        eoi_token_index=tiny.token_id(vocab.VISION_END_TOKEN),
        tie_word_embeddings=False,
    )
    processor = Gemma3OneImagePerPromptProcessor(
        image_processor=Gemma3ImageProcessorPil(size={"height": image_size, "width": image_size}),
        tokenizer=tokenizer,
        image_seq_length=tiny.IMAGE_TOKENS,
        chat_template=tiny.chat_template(vocab.VISION_START_TOKEN),
    )
    return config, processor


GEMMA3 = Anatomy(
    family="gemma3",
    model_types=("gemma3",),
    vision_tower="model.vision_tower",
    projector="model.multi_modal_projector",
    language_model="model.language_model",
    decoder_layers="model.language_model.layers",
    embed_tokens="model.language_model.embed_tokens",
    processor_class="mmrl_harness.models.families.gemma3:Gemma3OneImagePerPromptProcessor",
    tiny_model="tiny-gemma3",
    build_tiny=build_tiny,
)
