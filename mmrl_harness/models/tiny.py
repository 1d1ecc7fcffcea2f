"""Build the tiny offline VLMs (``tiny-llava``, ``tiny-qwen2-vl``, ...) from configs.

Nothing is downloaded: the tokenizer is a word-level ``tokenizers`` model over
:data:`mmrl_harness.models.vocab.VOCAB`, the weights are random from a fixed seed, and the image
processors are the PIL ones transformers uses when torchvision is absent. Each build is a real
``save_pretrained`` folder, so the very same :func:`~mmrl_harness.models.loading.load_vlm` code
path serves tiny models in tests and Hub checkpoints in real runs.

This module holds what every family shares (sizes, tokenizer, chat template, the cached build);
each family's own config and processor come from its file in ``mmrl_harness/models/families/``
through the ``build_tiny`` field of its registered ``Anatomy``. Every family sees a 32 px image
as 16 image tokens and shares one vocabulary and chat template (apart from the image markup and
a few family-specific special tokens appended at the end), so results across families compare.
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
from typing import TYPE_CHECKING, Any

from mmrl_harness.errors import InputError
from mmrl_harness.models import vocab

if TYPE_CHECKING:
    from mmrl_harness.models.anatomy import Anatomy

#: Bump when the recipe changes in a way the hashed values below do not capture.
RECIPE_VERSION = 1

#: Written last into a build folder; its presence marks a complete build.
RECIPE_FILE = "mmrl_tiny_recipe.json"

CACHE_ENV = "MMRL_CACHE"

# Sizes chosen so a build takes well under a second and GRPO/PPO learn the built-in tasks in
# seconds on a CPU (docs/episodic.md, docs/training.md): ~110k parameters (LLaVA) and ~125k (Qwen2-VL).
TEXT_SIZES: dict[str, int] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
}
#: Width of every tiny vision tower.
VISION_WIDTH = 32
#: Image tokens per image at every ``image_size`` (a 4 x 4 grid of features).
IMAGE_TOKENS = 16

_ROLES = "[" + ", ".join(f"'{r.strip('<|>')}'" for r in vocab.ROLE_TOKENS) + "]"

# One template for every family; only the image markup differs. Roles and turn ends are added
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


def chat_template(image_markup: str) -> str:
    """The shared Jinja chat template, with ``image_markup`` where a message holds an image."""
    return _CHAT_TEMPLATE.replace("IMAGE_MARKUP", image_markup)


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


class UnknownTinyFamilyError(InputError):
    """No registered family builds a tiny model under this name."""


def tiny_families() -> dict[str, Anatomy]:
    """Every registered family that ships a tiny build, by family name (``"llava"``)."""
    from mmrl_harness.registry import PluginError, architectures

    found: dict[str, Anatomy] = {}
    for loaded in architectures.load_all().values():
        # A broken architectures plugin must not hide the working families' tiny builds.
        if not isinstance(loaded, PluginError) and loaded.build_tiny is not None:
            found[loaded.family] = loaded
    return found


def tiny_model_names() -> dict[str, str]:
    """Names ``load_vlm`` builds offline (``"tiny-llava"``), mapped to their family."""
    return {a.tiny_model: f for f, a in tiny_families().items() if a.tiny_model is not None}


def build_tiny_vlm(
    family: str,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    image_size: int = 32,
    force: bool = False,
) -> Path:
    """Build (or reuse) a deterministic tiny VLM offline and return its ``save_pretrained`` folder.

    ``family`` is a registered family with a tiny build (``tiny_families()``). The folder is
    ``<cache_dir>/<family>-<hash of the recipe>``; the same seed and settings give byte-identical
    weights. It is written into a temporary folder and renamed into place, so a crashed or
    concurrent build never leaves a half-written model behind. ``force`` rebuilds.
    """
    families = tiny_families()
    anatomy = families.get(family)
    if anatomy is None or anatomy.build_tiny is None:
        raise UnknownTinyFamilyError(
            f"unknown tiny VLM family {family!r}; choose one of {', '.join(sorted(families))} "
            f"(or load by name: {', '.join(sorted(tiny_model_names()))})"
        )
    if image_size < 8 or image_size % 8:
        raise InputError(
            f"tiny VLM image_size must be a positive multiple of 8, got {image_size}: the image "
            "is cut into a 4 x 4 grid of 2 x 2-merged patches; use 32 (the default) or 64"
        )
    config, processor = anatomy.build_tiny(image_size)
    recipe = _recipe(family, seed, image_size, config, processor)
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = root / f"{family}-{digest}"
    if (target / RECIPE_FILE).is_file() and not force:
        return target

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
    try:
        model = random_model(config, seed, processor.tokenizer)
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


def _recipe(family: str, seed: int, image_size: int, config: Any, processor: Any) -> dict[str, Any]:
    """Everything that determines the build; its hash names the cache folder."""
    import torch
    import transformers

    tokens = processor.tokenizer.get_vocab()
    return {
        "recipe_version": RECIPE_VERSION,
        "family": family,
        "seed": seed,
        "image_size": image_size,
        "vocab": sorted(tokens, key=tokens.__getitem__),
        "chat_template": processor.chat_template,
        "config": config.to_dict(),
        # Weight initialisation may change between releases; a new release builds afresh.
        "transformers": transformers.__version__,
        "torch": torch.__version__.split("+")[0],
    }


def random_model(config: Any, seed: int, tokenizer: Any = None) -> Any:
    """The model of ``config`` with weights drawn from ``seed``, leaving the caller's RNG alone.

    No weight matrix is left all zero (those are redrawn from N(0, 0.02)).

    Its generation config may emit words and the end of turn only: every other special token of
    ``tokenizer`` (default: the shared vocabulary's) is suppressed, because sampling a pad, role
    or image token would corrupt the next turn's prompt (an extra image token breaks the count).
    """
    import torch
    from transformers import AutoModelForImageTextToText

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config)
        # Some families zero-initialise a weight matrix meant to be loaded (Gemma 3's image
        # projection): in a random model that would cut the image off the language model.
        with torch.no_grad():
            for param in model.parameters():
                if param.ndim >= 2 and not bool(param.any()):
                    param.normal_(0.0, 0.02)
    specials = (
        [t.content for t in tokenizer.added_tokens_decoder.values() if t.special]
        if tokenizer is not None
        else list(vocab.SPECIAL_TOKENS)
    )
    ids = tokenizer.convert_tokens_to_ids if tokenizer is not None else token_id
    gen = model.generation_config
    gen.bos_token_id = token_id(vocab.BOS_TOKEN)
    gen.eos_token_id = token_id(vocab.EOS_TOKEN)
    gen.pad_token_id = token_id(vocab.PAD_TOKEN)
    gen.suppress_tokens = sorted(ids(t) for t in specials if t != vocab.EOS_TOKEN)
    return model


def tokenizer(image_tokens: dict[str, str], extra_special: tuple[str, ...] = ()) -> Any:
    """A word-level fast tokenizer over the vocabulary, special tokens registered as added tokens.

    ``image_tokens`` names the family's multimodal tokens as tokenizer attributes
    (``{"image_token": "<image>"}``); ``extra_special`` are special tokens only this family needs,
    appended after the shared vocabulary so every shared word keeps its id in every family.
    """
    from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = (*vocab.VOCAB, *extra_special)
    backend = Tokenizer(
        models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=vocab.UNK_TOKEN)
    )
    # Lower-case so "What" and "what" are one word; Whitespace also splits "color?" into two.
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens(
        [
            AddedToken(t, special=True, normalized=False)
            for t in (*vocab.SPECIAL_TOKENS, *extra_special)
        ]
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


def text_config(vocab_size: int = len(vocab.VOCAB), **overrides: Any) -> dict[str, Any]:
    """Keyword arguments of the shared tiny language model (sizes and special-token ids)."""
    return {
        **TEXT_SIZES,
        "vocab_size": vocab_size,
        "bos_token_id": token_id(vocab.BOS_TOKEN),
        "eos_token_id": token_id(vocab.EOS_TOKEN),
        "pad_token_id": token_id(vocab.PAD_TOKEN),
        **overrides,
    }


def mrope_section(half: int) -> list[int]:
    """Split ``half`` rotary frequencies into (temporal, height, width), like Qwen's 16/24/24."""
    spatial = (half - half // 4) // 2
    return [half - 2 * spatial, spatial, spatial]
