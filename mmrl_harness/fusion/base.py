"""The ``FusionAdapter`` contract: how an image-text fusion strategy attaches to a pretrained VLM.

An adapter is a class registered under the ``mmrl_harness.fusion`` entry-point group. An
instance holds validated options; ``attach(model)`` adds trainable ``nn.Module`` children to the
model in place such that the model's outputs are unchanged at initialisation (zero-initialised
gates), so RL fine-tuning starts from the pretrained behaviour. The adapter also reports what it
costs (``cost``), which modules must train and be saved with LoRA (``trainable_module_names``)
and the coefficients or gates worth logging (``log_values``).

Writing an adapter (see ``weighted_sum.py`` for a small one)::

    class MyFusion(FusionAdapter):
        name = "my_fusion"

        class Options(FusionOptions):
            width: int = 64

        def _attach(self, model, anatomy): ...
        def trainable_module_names(self, model): ...
        def cost(self, model, image_tokens, text_tokens): ...
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from mmrl_harness.errors import MMRLError
from mmrl_harness.models.anatomy import Anatomy, anatomy_for, get_submodule
from mmrl_harness.registry import (
    PLUGIN_API_VERSION,
    PluginInfo,
    PluginValidationError,
    require_concrete_subclass,
)

if TYPE_CHECKING:
    from torch import nn

#: Attribute of the model that remembers the attached adapter (one adapter per model).
ATTACHED_ATTR = "mmrl_fusion_adapter"


class FusionError(MMRLError, ValueError):
    """Base class of fusion-adapter problems the user can fix."""


class FusionOptionsError(FusionError):
    """An adapter option is invalid, on its own or for the model it is attached to."""


class FusionAttachError(FusionError):
    """The adapter cannot attach to this model (missing hook, adapter already attached...)."""


class FusionOptions(BaseModel):
    """Base of every adapter's options: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class FusionCost:
    """What an adapter adds to one forward pass of one sample.

    FLOPs follow ``torch.utils.flop_counter``: matrix multiplications and attention at two FLOPs
    per multiply-accumulate; elementwise work (norms, activations, gates, weighted sums) is
    O(tokens x hidden) and not counted. Costs are for one sample holding ``image_tokens`` image
    tokens and ``text_tokens`` text tokens, forward only (a backward pass is about twice that).
    """

    #: Parameters the adapter trains (LoRA weights are not included).
    trainable_params: int
    #: Image tokens per sample the counts below assume.
    image_tokens: int
    #: Text tokens per sample the counts below assume.
    text_tokens: int
    #: FLOPs paid once per sample's images, independent of the text length.
    flops_per_image: int
    #: FLOPs paid per sequence position (image and text positions alike).
    flops_per_token: int

    @property
    def extra_flops_per_forward(self) -> int:
        """Extra FLOPs of one forward over one sample of ``image_tokens + text_tokens``."""
        return self.flops_per_image + (self.image_tokens + self.text_tokens) * self.flops_per_token


class FusionAdapter(ABC):
    """Base class of fusion adapters; subclasses set ``name``, ``Options`` and the hooks below."""

    #: Registry name, e.g. ``"cross_attention"``.
    name: ClassVar[str] = ""
    #: The plugin API this adapter targets (checked by the registry).
    plugin_api_version: ClassVar[int] = PLUGIN_API_VERSION
    #: Pydantic model of the adapter's options.
    Options: ClassVar[type[FusionOptions]] = FusionOptions

    def __init__(self, **options: Any) -> None:
        """Validate ``options`` against ``Options``; raise ``FusionOptionsError`` naming the bad value."""
        try:
            self.options = self.Options(**options)
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '<options>'}={e.get('input')!r}: {e['msg']}"
                for e in err.errors()
            )
            allowed = ", ".join(self.Options.model_fields) or "none"
            raise FusionOptionsError(
                f"invalid options for fusion adapter {self.name!r}: {problems}. "
                f"Allowed options: {allowed}."
            ) from None
        self._anatomy: Anatomy | None = None

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.model_dump().items())
        return f"{type(self).__name__}({opts})"

    def config(self) -> dict[str, Any]:
        """``{"name": ..., "options": {...}}``, for run configs and result provenance."""
        return {"name": self.name, "options": self.options.model_dump(mode="json")}

    # -- the contract --------------------------------------------------------------------------
    def attach(self, model: nn.Module, anatomy: Anatomy | None = None) -> None:
        """Modify ``model`` in place; at initialisation its outputs stay exactly the same.

        Attach before wrapping with PEFT (``apply_lora``), so LoRA sees the adapter modules.
        """
        if hasattr(model, "peft_config"):
            raise FusionAttachError(
                f"cannot attach fusion adapter {self.name!r} to a PEFT-wrapped model: attach it to "
                "the base model first, then wrap with mmrl_harness.fusion.apply_lora"
            )
        present = getattr(model, ATTACHED_ATTR, None)
        if present is not None:
            raise FusionAttachError(
                f"model already has fusion adapter {present.name!r} attached; attach one adapter "
                f"per model (load a fresh model to try {self.name!r})"
            )
        anatomy = anatomy if anatomy is not None else anatomy_for(model)
        self._attach(model, anatomy)
        self._anatomy = anatomy
        # A plain attribute (not a submodule): the adapter holds options, the model holds weights.
        setattr(model, ATTACHED_ATTR, self)

    @abstractmethod
    def _attach(self, model: nn.Module, anatomy: Anatomy) -> None:
        """Add the adapter's modules and hooks (called once, with the resolved anatomy)."""

    @abstractmethod
    def trainable_module_names(self, model: nn.Module) -> list[str]:
        """Dotted paths (from the base model) of modules to train and save, for ``modules_to_save``."""

    @abstractmethod
    def cost(self, model: nn.Module, image_tokens: int, text_tokens: int) -> FusionCost:
        """Trainable parameters and extra FLOPs for one sample of the given sizes."""

    def log_values(self, model: nn.Module) -> dict[str, float]:
        """Learned coefficients and gates worth logging, e.g. ``{"weighted_sum/text": 1.0}``."""
        return {}

    # -- helpers for subclasses ----------------------------------------------------------------
    def anatomy(self, model: nn.Module) -> Anatomy:
        """The anatomy used at attach time (or the model's registered one)."""
        return self._anatomy if self._anatomy is not None else anatomy_for(base_model(model))

    def trainable_params(self, model: nn.Module) -> int:
        """Number of parameters in the modules ``trainable_module_names`` lists."""
        base = base_model(model)
        total = 0
        for path in self.trainable_module_names(base):
            module = active_module(get_submodule(base, path))
            total += sum(p.numel() for p in module.parameters())
        return total


def require_part(model: nn.Module, anatomy: Anatomy, part: str, adapter: str) -> nn.Module:
    """The anatomy part ``part`` of ``model``, or a ``FusionAttachError`` naming the missing hook."""
    path = getattr(anatomy, part)
    try:
        return get_submodule(model, path)  # type: ignore[no-any-return]
    except AttributeError as err:
        raise FusionAttachError(
            f"fusion adapter {adapter!r} needs the {part} of family {anatomy.family!r} at "
            f"{path!r}, but {err}. Fix the anatomy registered for this family, or pick an "
            "adapter that does not need this hook"
        ) from None


def base_model(model: nn.Module) -> nn.Module:
    """The transformers model inside a PEFT wrapper (or ``model`` itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def active_module(module: nn.Module) -> nn.Module:
    """The module PEFT actually runs: the active trainable copy inside a ``ModulesToSaveWrapper``."""
    copies = getattr(module, "modules_to_save", None)
    active = getattr(module, "active_adapters", None)
    if copies is not None and active:
        return copies[active[0]]  # type: ignore[no-any-return]
    return module


def attached_adapter(model: nn.Module) -> FusionAdapter | None:
    """The adapter attached to ``model`` (PEFT-wrapped or not), or None."""
    return getattr(base_model(model), ATTACHED_ATTR, None)


def attach_fusion(model: nn.Module, name: str, **options: Any) -> FusionAdapter:
    """Attach the registered adapter ``name`` with ``options`` to ``model``; return the adapter."""
    from mmrl_harness.registry import fusion_adapters

    adapter_cls = fusion_adapters.load(name)
    adapter: FusionAdapter = adapter_cls(**options)
    adapter.attach(model)
    return adapter


def validate_plugin(obj: Any, info: PluginInfo) -> None:
    """Registry check: a fusion plugin must be a concrete ``FusionAdapter`` subclass with a name."""
    require_concrete_subclass(obj, FusionAdapter, info, "fusion")
    if not obj.name:
        raise PluginValidationError(
            f"fusion plugin {info.name!r} from {info.distribution} {info.version}: "
            f"{obj.__name__}.name is empty; set it to the registry name ({info.name!r})"
        )
    if not (isinstance(obj.Options, type) and issubclass(obj.Options, FusionOptions)):
        raise PluginValidationError(
            f"fusion plugin {info.name!r}: {obj.__name__}.Options must subclass "
            "mmrl_harness.fusion.base.FusionOptions (pydantic, extra='forbid')"
        )
