"""The tiny word-level vocabulary of the offline default VLMs (``tiny-llava``, ``tiny-qwen2-vl``).

Every answer or action word of the built-in tasks is exactly one token, so a reward can look at
the first generated token id and a policy can be a softmax over a handful of ``lm_head`` rows.
Ids are positions in ``VOCAB``: append new words at the end of their group only together with a
recipe change (the tiny build hashes the vocabulary, so a change builds a fresh cache folder).
Deliberately free of torch and transformers so task code can import it cheaply.
"""

from __future__ import annotations

#: Padding; never sampled (the tiny models' generation config suppresses it).
PAD_TOKEN = "<pad>"
#: Any word outside the vocabulary.
UNK_TOKEN = "<unk>"
#: Start of a conversation; emitted by the chat template, never added twice by the tokenizer.
BOS_TOKEN = "<s>"
#: End of a chat turn and of generation.
EOS_TOKEN = "</s>"
#: LLaVA's image placeholder; the processor expands it to one token per image feature.
IMAGE_TOKEN = "<image>"
#: Qwen2-VL's image placeholder and the markers around it (its M-RoPE looks for the start marker).
QWEN_IMAGE_TOKEN = "<|image_pad|>"
QWEN_VIDEO_TOKEN = "<|video_pad|>"
VISION_START_TOKEN = "<|vision_start|>"
VISION_END_TOKEN = "<|vision_end|>"
#: Chat roles, one added token each so a role is never confused with a prompt word.
ROLE_TOKENS: tuple[str, ...] = ("<|system|>", "<|user|>", "<|assistant|>")

SPECIAL_TOKENS: tuple[str, ...] = (
    PAD_TOKEN,
    UNK_TOKEN,
    BOS_TOKEN,
    EOS_TOKEN,
    IMAGE_TOKEN,
    QWEN_IMAGE_TOKEN,
    QWEN_VIDEO_TOKEN,
    VISION_START_TOKEN,
    VISION_END_TOKEN,
    *ROLE_TOKENS,
)

COLORS: tuple[str, ...] = (
    "red",
    "green",
    "blue",
    "yellow",
    "purple",
    "orange",
    "white",
    "black",
    "gray",
)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
#: Counts and positions as digit strings; the pre-tokenizer keeps ``"12"`` as one word.
NUMBERS: tuple[str, ...] = tuple(str(n) for n in range(21))
ACTIONS: tuple[str, ...] = (
    "left",
    "right",
    "up",
    "down",
    "forward",
    "stay",
    "hit",
    "stand",
    "pick",
    "toggle",
)
YES_NO: tuple[str, ...] = ("yes", "no")

#: Every word a built-in task accepts as an answer or action.
ANSWER_WORDS: tuple[str, ...] = (*COLORS, *SHAPES, *NUMBERS, *ACTIONS, *YES_NO)

#: Words the built-in prompts are written with (anything else encodes as ``<unk>``).
PROMPT_WORDS: tuple[str, ...] = (
    "what",
    "which",
    "how",
    "many",
    "is",
    "the",
    "of",
    "in",
    "color",
    "shape",
    "count",
    "shapes",
    "objects",
    "move",
    "marker",
    "target",
    "number",
    "line",
    "position",
    "answer",
    "with",
    "one",
    "word",
    "image",
    "you",
    "are",
    "at",
    "to",
    "a",
    "card",
    "cards",
    "total",
    "dealer",
    "player",
    "agent",
    "goal",
    "grid",
    "turn",
    "action",
    "and",
    "your",
    "go",
    "sum",
    "there",
    "?",
    ".",
    ":",
    ",",
)

#: The whole vocabulary; a token's id is its index here.
VOCAB: tuple[str, ...] = (*SPECIAL_TOKENS, *ANSWER_WORDS, *PROMPT_WORDS)


def _check() -> None:
    # Import-time guard: a duplicate would silently give two words one id.
    seen: set[str] = set()
    dupes = [w for w in VOCAB if w in seen or seen.add(w)]  # type: ignore[func-returns-value]
    if dupes:
        raise AssertionError(f"duplicate vocabulary entries: {dupes}")


_check()
