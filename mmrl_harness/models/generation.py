"""Prompt a loaded VLM with images and questions, and decode what it answers.

``build_inputs`` is the one place prompts become model inputs, so single answers, batched
rollouts across environments and trainers all see exactly the same prompt format.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from PIL import Image
    from transformers import BatchFeature

    from mmrl_harness.models.loading import LoadedVLM


def user_turn(question: str) -> list[dict[str, Any]]:
    """A one-turn conversation: the image, then the question (the order VLMs are trained on)."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]


def build_inputs(
    loaded: LoadedVLM, images: Sequence[Image.Image], prompts: Sequence[str]
) -> BatchFeature:
    """Model inputs for one image and one question per row, left-padded, on the model's device.

    Left padding keeps every row's last prompt token at the same position, so generation
    appends new tokens right after each prompt and row ``i`` of a batch equals a batch of one.
    """
    if len(images) != len(prompts):
        raise ValueError(
            f"build_inputs needs one image per prompt, got {len(images)} images for "
            f"{len(prompts)} prompts; pass the same image twice to ask two questions about it"
        )
    if not prompts:
        raise ValueError("build_inputs got no prompts; pass at least one (image, prompt) pair")
    processor = loaded.processor
    # Rendering the chat template costs about a millisecond a row; rollouts repeat one question
    # across the batch, so render each distinct prompt once.
    templated = {
        p: processor.apply_chat_template(user_turn(p), add_generation_prompt=True, tokenize=False)
        for p in dict.fromkeys(prompts)
    }
    texts = [templated[p] for p in prompts]
    inputs = processor(
        images=list(images),
        text=texts,
        padding=True,
        padding_side="left",
        return_tensors="pt",
    )
    # Cast floating inputs (pixel values) to the model's dtype so a bf16 model takes fp32 images.
    return inputs.to(loaded.device, dtype=loaded.model.dtype)  # type: ignore[no-any-return]


def add_position_ids(loaded: LoadedVLM, inputs: dict[str, Any]) -> dict[str, Any]:
    """Add position ids that skip left padding, for a plain forward over a left-padded batch.

    ``generate`` derives them from the attention mask itself; a plain forward would otherwise
    number padded rows from the first pad token, so a row's scores would depend on its padding.
    Families with multimodal rotary positions (Qwen2-VL) derive them from the mask themselves.
    """
    model = loaded.model
    inner = getattr(model, "get_base_model", lambda: model)()
    own = hasattr(inner, "get_rope_index") or hasattr(
        getattr(inner, "model", None), "get_rope_index"
    )
    if not own:
        inputs["position_ids"] = (inputs["attention_mask"].long().cumsum(-1) - 1).clamp(min=0)
    return inputs


def generate_ids(
    loaded: LoadedVLM,
    inputs: BatchFeature,
    *,
    max_new_tokens: int = 8,
    do_sample: bool = False,
    **generate_kwargs: Any,
) -> torch.Tensor:
    """Only the newly generated token ids, shape ``(batch, <= max_new_tokens)``.

    Rows that finish early are padded with the pad token after their end-of-turn token.
    """
    import torch

    with torch.no_grad():
        sequences = loaded.model.generate(
            **inputs, max_new_tokens=max_new_tokens, do_sample=do_sample, **generate_kwargs
        )
    return sequences[:, inputs["input_ids"].shape[1] :]  # type: ignore[no-any-return]


def decode_answers(loaded: LoadedVLM, new_ids: torch.Tensor) -> list[str]:
    """Text of generated ids, special tokens (end of turn, padding) removed."""
    texts = loaded.tokenizer.batch_decode(new_ids, skip_special_tokens=True)
    return [t.strip() for t in texts]


def generate_answers(
    loaded: LoadedVLM,
    images: Sequence[Image.Image],
    questions: Sequence[str],
    *,
    max_new_tokens: int = 8,
    do_sample: bool = False,
    **generate_kwargs: Any,
) -> list[str]:
    """One answer per (image, question) pair, generated as one left-padded batch."""
    inputs = build_inputs(loaded, images, questions)
    new_ids = generate_ids(
        loaded, inputs, max_new_tokens=max_new_tokens, do_sample=do_sample, **generate_kwargs
    )
    return decode_answers(loaded, new_ids)


def generate_answer(
    loaded: LoadedVLM,
    image: Image.Image,
    question: str,
    max_new_tokens: int = 8,
    do_sample: bool = False,
) -> str:
    """The model's answer to one question about one image (only the new tokens, decoded)."""
    return generate_answers(
        loaded, [image], [question], max_new_tokens=max_new_tokens, do_sample=do_sample
    )[0]
