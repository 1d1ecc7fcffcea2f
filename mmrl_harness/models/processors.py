"""Processor classes the harness ships for families whose stock processor needs more than images.

Its own module (not ``loading``) because both ``loading`` and the tiny-model builder (``tiny``)
need it, and ``loading`` itself imports ``tiny``.
"""

from __future__ import annotations

from typing import Any

from transformers import AutoProcessor, Qwen2VLConfig, Qwen2VLProcessor


class Qwen2VLImageOnlyProcessor(Qwen2VLProcessor):
    """Qwen2-VL's processor without the video processor, which would import torchvision.

    The harness feeds images only. Its ``__init__`` drops ``video_processor`` from the signature,
    because ``ProcessorMixin`` derives the sub-processors to load from the parameter names.
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
