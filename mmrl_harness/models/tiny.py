"""Build the tiny offline default VLMs (``tiny-llava``, ``tiny-qwen2-vl``) from configs.

Nothing is downloaded: the tokenizer is a word-level ``tokenizers`` model over
:data:`mmrl_harness.models.vocab.VOCAB`, the weights are random from a fixed seed, and the image
processors are the PIL ones transformers uses when torchvision is absent. Each build is a real
``save_pretrained`` folder, so the very same :func:`~mmrl_harness.models.loading.load_vlm` code
path serves tiny models in tests and Hub checkpoints in real runs.

Both families see a 32 px image as 16 image tokens and share one vocabulary and chat template
(apart from the image markup), so results on the two are comparable.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from mmrl_harness.models import vocab

Family = Literal["llava", "qwen2_vl"]

#: Names ``load_vlm`` accepts for the tiny builds, mapped to their family.
TINY_MODELS: dict[str, Family] = {"tiny-llava": "llava", "tiny-qwen2-vl": "qwen2_vl"}

#: Bump when the recipe changes in a way the hashed values below do not capture.
RECIPE_VERSION = 1

#: Written last into a build folder; its presence marks a complete build.
RECIPE_FILE = "mmrl_tiny_recipe.json"

CACHE_ENV = "MMRL_CACHE"

# Sizes chosen so a build takes well under a second and GRPO/PPO learn the built-in tasks in
# seconds on a CPU (docs/episodic.md, docs/training.md): ~110k parameters (LLaVA) and ~125k (Qwen2-VL).
_TEXT = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
}
_VISION_WIDTH = 32
#: Image tokens per image at every ``image_size`` (a 4 x 4 grid of features).
IMAGE_TOKENS = 16

_ROLES = "[" + ", ".join(f"'{r.strip('<|>')}'" for r in vocab.ROLE_TOKENS) + "]"

# One template for both families; only the image markup differs. Roles and turn ends are added
# special tokens, so they can never be mistaken for (or sampled as) an answer word.
_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for message in messages -%}"
    "{%- if message['role'] not in " + _ROLES + " -%}"
    "{{ raise_exception('tiny chat template: unknown role ' + message['role']) }}"
    "{%- endif -%}"
    "<|{{ message['role'] }}|> "
    "{%- if message['content'] is string -%}{{ message['content'] }} "
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}IMAGE_MARKUP "
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }} "
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{ eos_token }} "
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|> {%- endif -%}"
)
_IMAGE_MARKUP: dict[str, str] = {
    "llava": vocab.IMAGE_TOKEN,
    "qwen2_vl": vocab.VISION_START_TOKEN + vocab.QWEN_IMAGE_TOKEN + vocab.VISION_END_TOKEN,
}


def chat_template(family: Family) -> str:
    """The Jinja chat template of a tiny family."""
    return _CHAT_TEMPLATE.replace("IMAGE_MARKUP", _IMAGE_MARKUP[family])


def token_id(token: str) -> int:
    """The id of a vocabulary entry (its index in ``VOCAB``)."""
    return vocab.VOCAB.index(token)


def default_cache_dir() -> Path:
    """Where tiny builds live: ``$MMRL_CACHE/tiny``, else ``~/.cache/mmrl_harness/tiny``."""
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root).expanduser() / "tiny"
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "mmrl_harness" / "tiny"


def build_tiny_vlm(
    family: Family,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    image_size: int = 32,
    force: bool = False,
) -> Path:
    """Build (or reuse) a deterministic tiny VLM offline and return its ``save_pretrained`` folder.

    The folder is ``<cache_dir>/<family>-<hash of the recipe>``; the same seed and settings give
    byte-identical weights. It is written into a temporary folder and renamed into place, so a
    crashed or concurrent build never leaves a half-written model behind. ``force`` rebuilds.
    """
    if family not in _IMAGE_MARKUP:
        raise ValueError(
            f"unknown tiny VLM family {family!r}; choose one of {', '.join(_IMAGE_MARKUP)} "
            f"(or load by name: {', '.join(TINY_MODELS)})"
        )
    if image_size < 8 or image_size % 8:
        raise ValueError(
            f"tiny VLM image_size must be a positive multiple of 8, got {image_size}: the image "
            "is cut into a 4 x 4 grid of 2 x 2-merged patches; use 32 (the default) or 64"
        )
    config, processor = _parts(family, image_size)
    recipe = _recipe(family, seed, image_size, config)
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = root / f"{family}-{digest}"
    if (target / RECIPE_FILE).is_file() and not force:
        return target

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
    try:
        model = _random_model(config, seed)
        with _quiet_progress_bars():  # a shard bar for a 0.5 MB file is noise in every test log
            model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / RECIPE_FILE).write_text(json.dumps(recipe, indent=2, sort_keys=True) + "\n")
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is a normal folder
        _move_into_place(tmp, target, replace=force)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@contextlib.contextmanager
def _quiet_progress_bars() -> Iterator[None]:
    from transformers.utils import logging

    was_enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            logging.enable_progress_bar()


def _move_into_place(tmp: Path, target: Path, *, replace: bool) -> None:
    """Rename ``tmp`` to ``target``; a finished build of the same recipe by another process wins."""
    if target.exists() and (replace or not (target / RECIPE_FILE).is_file()):
        trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
        with contextlib.suppress(FileNotFoundError):  # a concurrent build may have moved it
            target.rename(trash / "build")
        shutil.rmtree(trash, ignore_errors=True)
    try:
        tmp.rename(target)
    except OSError:
        # Another process renamed its identical build into place first; keep that one.
        if not (target / RECIPE_FILE).is_file():
            raise


def _recipe(family: Family, seed: int, image_size: int, config: Any) -> dict[str, Any]:
    """Everything that determines the build; its hash names the cache folder."""
    import torch
    import transformers

    return {
        "recipe_version": RECIPE_VERSION,
        "family": family,
        "seed": seed,
        "image_size": image_size,
        "vocab": list(vocab.VOCAB),
        "chat_template": chat_template(family),
        "config": config.to_dict(),
        # Weight initialisation may change between releases; a new release builds afresh.
        "transformers": transformers.__version__,
        "torch": torch.__version__.split("+")[0],
    }


def _random_model(config: Any, seed: int) -> Any:
    """The model with weights drawn from ``seed``, leaving the caller's RNG state untouched."""
    import torch
    from transformers import AutoModelForImageTextToText

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config)
    gen = model.generation_config
    gen.bos_token_id = token_id(vocab.BOS_TOKEN)
    gen.eos_token_id = token_id(vocab.EOS_TOKEN)
    gen.pad_token_id = token_id(vocab.PAD_TOKEN)
    # Only words and the end of turn may be generated: sampling a pad, role or image token
    # would corrupt the next turn's prompt (an extra <image> breaks the image-token count).
    gen.suppress_tokens = [token_id(t) for t in vocab.SPECIAL_TOKENS if t != vocab.EOS_TOKEN]
    return model


def _tokenizer(family: Family) -> Any:
    """A word-level fast tokenizer over the vocabulary, special tokens registered as added tokens."""
    from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(
        models.WordLevel({w: i for i, w in enumerate(vocab.VOCAB)}, unk_token=vocab.UNK_TOKEN)
    )
    # Lower-case so "What" and "what" are one word; Whitespace also splits "color?" into two.
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in vocab.SPECIAL_TOKENS]
    )
    image_tokens = (
        {"image_token": vocab.IMAGE_TOKEN}
        if family == "llava"
        else {"image_token": vocab.QWEN_IMAGE_TOKEN, "video_token": vocab.QWEN_VIDEO_TOKEN}
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=vocab.BOS_TOKEN,
        eos_token=vocab.EOS_TOKEN,
        pad_token=vocab.PAD_TOKEN,
        unk_token=vocab.UNK_TOKEN,
        # Generation appends on the right, so batched prompts must be padded on the left.
        padding_side="left",
        extra_special_tokens=image_tokens,
    )


def _parts(family: Family, image_size: int) -> tuple[Any, Any]:
    """The model config and the processor of a tiny family."""
    tokenizer = _tokenizer(family)
    text = {
        **_TEXT,
        "vocab_size": len(vocab.VOCAB),
        "bos_token_id": token_id(vocab.BOS_TOKEN),
        "eos_token_id": token_id(vocab.EOS_TOKEN),
        "pad_token_id": token_id(vocab.PAD_TOKEN),
    }
    if family == "llava":
        return _llava_parts(tokenizer, text, image_size)
    return _qwen2_vl_parts(tokenizer, text, image_size)


def _llava_parts(tokenizer: Any, text: dict[str, Any], image_size: int) -> tuple[Any, Any]:
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    patch = image_size // 4
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=_VISION_WIDTH,
            intermediate_size=2 * _VISION_WIDTH,
            projection_dim=_VISION_WIDTH,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=patch,
        ),
        text_config=LlamaConfig(**text, tie_word_embeddings=False),
        image_token_index=token_id(vocab.IMAGE_TOKEN),
        # "default" drops CLIP's CLS feature: 4 x 4 patches give exactly IMAGE_TOKENS tokens.
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        image_seq_length=IMAGE_TOKENS,
        tie_word_embeddings=False,
    )
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # the CLS token the strategy then drops
        chat_template=chat_template("llava"),
    )
    return config, processor


def _qwen2_vl_parts(tokenizer: Any, text: dict[str, Any], image_size: int) -> tuple[Any, Any]:
    from transformers import Qwen2VLConfig
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    from mmrl_harness.models.processors import Qwen2VLImageOnlyProcessor

    patch = image_size // 8  # 8 x 8 patches, merged 2 x 2 into IMAGE_TOKENS tokens
    head_dim = _TEXT["hidden_size"] // _TEXT["num_attention_heads"]
    config = Qwen2VLConfig(
        vision_config={
            "depth": 1,
            "embed_dim": _VISION_WIDTH,
            "hidden_size": _TEXT["hidden_size"],  # the merger projects into the LM width
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": patch,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        text_config={
            **text,
            # M-RoPE splits the rotary half-dimension into temporal, height and width sections.
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": _mrope_section(head_dim // 2),
            },
        },
        image_token_id=token_id(vocab.QWEN_IMAGE_TOKEN),
        video_token_id=token_id(vocab.QWEN_VIDEO_TOKEN),
        vision_start_token_id=token_id(vocab.VISION_START_TOKEN),
        vision_end_token_id=token_id(vocab.VISION_END_TOKEN),
        tie_word_embeddings=False,
    )
    pixels = image_size * image_size
    image_processor = Qwen2VLImageProcessorPil(
        # min = max pixels: every image is resized to about image_size² pixels, so a square
        # image always gives IMAGE_TOKENS tokens (other aspect ratios give a few fewer).
        size={"shortest_edge": pixels, "longest_edge": pixels},
        patch_size=patch,
        temporal_patch_size=2,
        merge_size=2,
    )
    processor = Qwen2VLImageOnlyProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=chat_template("qwen2_vl"),
    )
    return config, processor


def _mrope_section(half: int) -> list[int]:
    """Split ``half`` rotary frequencies into (temporal, height, width), like Qwen's 16/24/24."""
    spatial = (half - half // 4) // 2
    return [half - 2 * spatial, spatial, spatial]
