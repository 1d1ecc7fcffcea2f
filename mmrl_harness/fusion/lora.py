"""Train a fusion adapter together with LoRA: its modules go into PEFT's ``modules_to_save``.

``modules_to_save`` makes PEFT keep a trainable copy of each listed module, train it, and write it
into ``adapter_model.safetensors`` beside the LoRA weights, so ``PeftModel.from_pretrained`` on a
model with the same adapter attached restores it exactly. The adapter's hooks look their module
up at call time, so the copy is what runs (see ``image_context``).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from mmrl_harness.fusion.base import FusionAdapter, FusionAttachError, attached_adapter

if TYPE_CHECKING:
    from peft import LoraConfig, PeftModel
    from torch import nn


def output_layer_name(model: nn.Module) -> str | None:
    """The dotted name of the model's output layer (``lm_head`` in most families), if any."""
    head = model.get_output_embeddings()  # type: ignore[operator]
    if head is None:
        return None
    return next((name for name, module in model.named_modules() if module is head), None)


def fusion_lora_config(
    model: nn.Module,
    lora_config: LoraConfig,
    adapter: FusionAdapter | None = None,
    *,
    train_lm_head: bool = False,
) -> LoraConfig:
    """A copy of ``lora_config`` whose ``modules_to_save`` also lists the adapter's modules and,
    with ``train_lm_head``, the model's output layer (the one place that list is assembled).

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
