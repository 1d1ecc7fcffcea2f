"""Train a fusion adapter together with LoRA: its modules go into PEFT's ``modules_to_save``.

``modules_to_save`` makes PEFT keep a trainable copy of each listed module, train it, and write it
into ``adapter_model.safetensors`` beside the LoRA weights, so ``PeftModel.from_pretrained`` on a
model with the same adapter attached restores it exactly. The adapter's hooks look their module
up at call time, so the copy is what runs (see ``image_context``).

``target_modules="language-model"`` (:data:`LANGUAGE_MODEL`, the harness's default) is resolved
here, through the family's anatomy, into a PEFT regex naming every linear layer of the language
model: the vision tower and projector get no LoRA and stay frozen, as pretrained VLMs are usually
tuned. ``"all-linear"`` (PEFT's own value) still puts LoRA on every linear layer but the output.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from mmrl_harness.fusion.base import FusionAdapter, FusionAttachError, attached_adapter
from mmrl_harness.models.anatomy import anatomy_for

if TYPE_CHECKING:
    from peft import LoraConfig, PeftModel
    from torch import nn


def output_layer_name(model: nn.Module) -> str | None:
    """The dotted name of the model's output layer (``lm_head`` in most families), if any."""
    head = model.get_output_embeddings()  # type: ignore[operator]
    if head is None:
        return None
    return next((name for name, module in model.named_modules() if module is head), None)


#: ``target_modules`` value meaning "every linear layer of the language model" (the default).
LANGUAGE_MODEL = "language-model"


def _under(name: str, roots: Iterable[str]) -> bool:
    """Whether module ``name`` is one of ``roots`` or inside one (PEFT matches names by suffix)."""
    return any(name == r or name.endswith(f".{r}") or f".{r}." in f".{name}" for r in roots)


def language_model_targets(model: nn.Module, exclude: Iterable[str] = ()) -> str:
    """A PEFT ``target_modules`` regex matching exactly the linear layers of ``model``'s language
    model (where the family's anatomy says it lives), leaving out modules under ``exclude``
    (``modules_to_save``: a module trained in full must not also get LoRA).

    The regex is the language model's path plus the linear layers' own names
    (``q_proj|k_proj|...``), which keeps ``adapter_config.json`` short; should those names also
    match a layer outside the wanted set (an adapter block inside the decoder reusing ``q_proj``),
    it names every wanted layer in full instead.
    """
    from torch import nn

    prefix = anatomy_for(model).language_model + "."
    excluded = list(exclude)
    names = [n for n, _ in model.named_modules()]
    wanted = [
        n
        for n, m in model.named_modules()
        if n.startswith(prefix) and isinstance(m, nn.Linear) and not _under(n, excluded)
    ]
    if not wanted:
        raise FusionAttachError(
            f"{type(model).__name__} has no linear layer under {prefix[:-1]!r} to put LoRA on; "
            "set lora.target_modules to module names or 'all-linear'"
        )
    leaves = sorted({n.rsplit(".", 1)[-1] for n in wanted})
    compact = f"{re.escape(prefix)}(?:.*\\.)?(?:{'|'.join(map(re.escape, leaves))})"
    if [n for n in names if re.fullmatch(compact, n)] == wanted:
        return compact
    return "|".join(re.escape(n) for n in wanted)


def fusion_lora_config(
    model: nn.Module,
    lora_config: LoraConfig,
    adapter: FusionAdapter | None = None,
    *,
    train_lm_head: bool = False,
) -> LoraConfig:
    """A copy of ``lora_config`` whose ``modules_to_save`` also lists the adapter's modules and,
    with ``train_lm_head``, the model's output layer (the one place that list is assembled), and
    whose ``target_modules`` :data:`LANGUAGE_MODEL` is resolved to the language model's layers.

    Pass the result as ``peft_config`` to TRL trainers, or use ``apply_lora``.
    """
    adapter = adapter if adapter is not None else attached_adapter(model)
    if adapter is None:
        raise FusionAttachError(
            "no fusion adapter is attached to this model; call attach_fusion(model, name) "
            "before building the LoRA config (use 'concat' for the plain VLM)"
        )
    config = copy.deepcopy(lora_config)
    names = list(config.modules_to_save or [])
    head = output_layer_name(model) if train_lm_head else None
    if head is not None and head not in names:
        names.append(head)
    names += [n for n in adapter.trainable_module_names(model) if n not in names]
    config.modules_to_save = names or None
    if config.target_modules == LANGUAGE_MODEL:
        config.target_modules = language_model_targets(model, names)
    return config


def apply_lora(
    model: nn.Module,
    adapter: FusionAdapter | None,
    lora_config: LoraConfig,
    *,
    train_lm_head: bool = False,
) -> PeftModel:
    """Wrap ``model`` with LoRA so that ``adapter``'s modules (and, with ``train_lm_head``, the
    output layer) train and save with it."""
    from peft import get_peft_model

    config = fusion_lora_config(model, lora_config, adapter, train_lm_head=train_lm_head)
    return get_peft_model(model, config)  # type: ignore[arg-type]
