"""The default LoRA fits pretrained VLMs: LoRA on the language model only, vision tower frozen.

Checked on both tiny families through ``build_policy`` (the path every algorithm uses), so the
anatomy-based resolution of ``target_modules: language-model`` is what is under test.
"""

from __future__ import annotations

from typing import Any

import pytest
from peft.tuners.lora import LoraLayer
from torch import nn

from mmrl_harness.fusion.lora import LANGUAGE_MODEL
from mmrl_harness.models.anatomy import anatomy_for
from mmrl_harness.train import build_policy
from mmrl_harness.train.config import LoraSpec, train_config_from_dict

FAMILIES = ["tiny-llava", "tiny-qwen2-vl"]


def _policy(model: str, **lora: Any) -> Any:
    config = train_config_from_dict({"model": model, "task": "color_shape", "lora": lora})
    return build_policy(config)


def _lora_module_names(base: nn.Module) -> list[str]:
    return [name for name, module in base.named_modules() if isinstance(module, LoraLayer)]


def test_the_default_target_is_the_language_model() -> None:
    # config.py spells the value out (it may not import fusion.lora): the two must agree.
    assert LoraSpec().target_modules == LANGUAGE_MODEL


@pytest.mark.parametrize("model", FAMILIES)
def test_default_lora_sits_on_every_language_model_linear_and_freezes_the_vision_tower(
    model: str,
) -> None:
    policy = _policy(model)
    base = policy.peft_model.get_base_model()
    anatomy = anatomy_for(base)
    vision = anatomy.get(base, "vision_tower")
    projector = anatomy.get(base, "projector")
    assert not [n for n, p in vision.named_parameters() if p.requires_grad]
    assert not [n for n, p in projector.named_parameters() if p.requires_grad]

    lm_prefix = anatomy.language_model + "."
    wrapped = _lora_module_names(base)
    assert wrapped and all(n.startswith(lm_prefix) for n in wrapped)
    # Every linear layer of the language model got LoRA (each LoRA layer wraps one nn.Linear
    # as its base_layer): 7 per decoder layer in both families (q, k, v, o, gate, up, down).
    layers = len(anatomy.layers(base))
    assert len(wrapped) == 7 * layers
    # What trains: LoRA matrices in the language model and the output layer (train_lm_head).
    trainable = [n for n, p in base.named_parameters() if p.requires_grad]
    assert trainable and all(
        ("lora_" in n and n.startswith(lm_prefix)) or n.startswith("lm_head.") for n in trainable
    )


@pytest.mark.parametrize("model", FAMILIES)
def test_all_linear_still_puts_lora_on_the_vision_tower(model: str) -> None:
    policy = _policy(model, target_modules="all-linear")
    base = policy.peft_model.get_base_model()
    vision_prefix = anatomy_for(base).vision_tower + "."
    assert any(n.startswith(vision_prefix) for n in _lora_module_names(base))


def test_an_adapter_inside_the_decoder_trains_in_full_and_gets_no_lora() -> None:
    config = train_config_from_dict(
        {"model": "tiny-llava", "task": "color_shape", "fusion": {"name": "cross_attention"}}
    )
    policy = build_policy(config)
    base = policy.peft_model.get_base_model()
    saved = [n for n in policy.lora_config.modules_to_save or [] if n != "lm_head"]
    assert saved  # the cross-attention blocks live inside the language model's decoder layers
    wrapped = _lora_module_names(base)
    assert not [w for w in wrapped for s in saved if f".{s}." in f".{w}."]
    assert len(wrapped) == 7 * len(anatomy_for(base).layers(base))
