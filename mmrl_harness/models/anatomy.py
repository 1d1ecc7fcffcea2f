"""Per-family "anatomy": where a VLM's image features come out and where they enter the LM.

Fusion adapters never hard-code a family; they ask the anatomy. A new VLM family is supported by
registering an ``Anatomy`` under the ``mmrl_harness.architectures`` entry-point group; the
built-in families each live in one file of ``mmrl_harness/models/families/`` (anatomy, processor
quirks and tiny offline build together) and register the same way.
Paths are dotted attribute paths from the loaded ``*ForConditionalGeneration`` model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mmrl_harness.errors import MMRLError
from mmrl_harness.registry import PLUGIN_API_VERSION, PluginInfo, PluginValidationError

if TYPE_CHECKING:
    from torch import nn


class UnsupportedArchitectureError(MMRLError, ValueError):
    """The model's family has no registered anatomy."""


def get_submodule(model: Any, path: str) -> Any:
    """``model.a.b.c`` for ``path == "a.b.c"``, with an error naming the missing part."""
    obj = model
    for part in path.split("."):
        if not hasattr(obj, part):
            raise AttributeError(
                f"{type(model).__name__} has no {path!r} (missing {part!r} on {type(obj).__name__})"
            )
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class Anatomy:
    """Where the parts of one VLM family live.

    Attributes:
        family: short family name, e.g. ``"llava"``.
        model_types: ``config.model_type`` values this anatomy handles.
        vision_tower: path to the vision encoder.
        projector: path to the module whose output is the image tokens fed to the LM
            (LLaVA's ``multi_modal_projector``, Qwen2-VL's ``visual.merger``).
        language_model: path to the decoder stack (the text model without ``lm_head``).
        decoder_layers: path to the ``nn.ModuleList`` of decoder layers.
        embed_tokens: path to the text token embedding.
        image_token_id_attr: config attribute holding the image placeholder token id.
        text_config_attr: config attribute holding the text config (hidden size, layers ...).
        vision_hidden_size_attr: attribute of ``config.vision_config`` with the vision width.
        processor_class: ``"module:Class"`` of a processor to load instead of the one the
            checkpoint names, or None for ``AutoProcessor``. For families whose stock processor
            imports torchvision through its video processor (Qwen-VL, SmolVLM), or whose stock
            processor needs a fix to take one image per prompt (Gemma 3).
        tiny_model: the name ``load_vlm`` builds offline for this family (``"tiny-llava"``), or
            None when the family has no tiny build.
        build_tiny: ``build_tiny(image_size) -> (config, processor)`` for the tiny offline
            model (see ``mmrl_harness.models.tiny``), or None.
    """

    family: str
    model_types: tuple[str, ...]
    vision_tower: str
    projector: str
    language_model: str
    decoder_layers: str
    embed_tokens: str
    image_token_id_attr: str = "image_token_id"
    text_config_attr: str = "text_config"
    vision_hidden_size_attr: str = "hidden_size"
    processor_class: str | None = None
    tiny_model: str | None = None
    build_tiny: Callable[[int], tuple[Any, Any]] | None = None
    plugin_api_version: int = PLUGIN_API_VERSION

    def get(self, model: Any, part: str) -> nn.Module:
        """The module at one of the anatomy's paths, e.g. ``anatomy.get(model, "projector")``."""
        return get_submodule(model, getattr(self, part))  # type: ignore[no-any-return]

    def layers(self, model: Any) -> nn.ModuleList:
        """The decoder layers."""
        return self.get(model, "decoder_layers")  # type: ignore[return-value]

    def image_token_id(self, model: Any) -> int:
        """The id of the image placeholder token."""
        return int(getattr(model.config, self.image_token_id_attr))

    def text_config(self, model: Any) -> Any:
        """The language model's config."""
        return getattr(model.config, self.text_config_attr)


def validate_plugin(obj: Any, info: PluginInfo) -> None:
    """Registry check: an architectures plugin must be an ``Anatomy``."""
    if not isinstance(obj, Anatomy):
        raise PluginValidationError(
            f"architectures plugin {info.name!r} from {info.distribution} must be an "
            f"mmrl_harness.models.anatomy.Anatomy instance, got {type(obj).__name__}"
        )


def anatomy_for(model_or_config: Any) -> Anatomy:
    """The registered anatomy for a model (or config), or an error naming the supported ones."""
    from mmrl_harness.registry import PluginError, architectures

    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    supported: list[str] = []
    broken: list[str] = []
    for loaded in architectures.load_all().values():
        if isinstance(loaded, PluginError):  # a broken plugin must not hide the working ones
            broken.append(str(loaded))
            continue
        supported.extend(loaded.model_types)
        if model_type in loaded.model_types:
            return loaded  # type: ignore[no-any-return]
    also = f" Plugins that failed to load: {'; '.join(broken)}." if broken else ""
    raise UnsupportedArchitectureError(
        f"unsupported VLM family {model_type!r}; supported: {', '.join(sorted(supported))}. "
        "Add one by registering an mmrl_harness.models.anatomy.Anatomy under the "
        f"'mmrl_harness.architectures' entry-point group (see docs/plugins.md).{also}"
    )
