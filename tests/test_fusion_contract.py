"""The input-fusion contract: what a fusion module is called with, and the checks that hold
adapters to it (``mmrl_harness.testing``), including adapters that break it."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import BaseModel
from support import color_prompts, tiny_grpo_config
from torch import nn

from mmrl_harness.fusion import FusionCost, attach_fusion
from mmrl_harness.fusion.image_context import FusionInputs, completion_boundary
from mmrl_harness.fusion.input_fusion import InputFusionAdapter
from mmrl_harness.models.loading import LoadedVLM
from mmrl_harness.registry import PluginValidationError, fusion_adapters
from mmrl_harness.testing import ContractViolation, check_fusion_adapter
from mmrl_harness.testing.fusion import _inputs, _with_completion

# -- test adapters: one module at the LM input, built from a forward function ---------------------


class _Module(nn.Module):
    """Image tokens shifted by a gated projection of some text summary (FiLM-like)."""

    def __init__(self, hidden: int, init_gate: float = 0.0) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden, hidden, bias=False)
        self.gate = nn.Parameter(torch.full((), init_gate))
        self.seen: list[FusionInputs] = []

    def summary(self, inputs: FusionInputs) -> torch.Tensor:
        return inputs.pooled_prompt_text()

    def forward(self, inputs: FusionInputs) -> torch.Tensor:
        self.seen.append(inputs)
        embeds = inputs.inputs_embeds
        shift = torch.tanh(self.gate) * self.proj(self.summary(inputs))
        return torch.where(inputs.image_mask[..., None], embeds + shift[:, None], embeds)


class _PoolsEverything(_Module):
    """Pools every position: padding and completion tokens included (the bug the kit catches)."""

    def summary(self, inputs: FusionInputs) -> torch.Tensor:
        return inputs.inputs_embeds.mean(dim=1)


class _OpenAtInit(_Module):
    def __init__(self, hidden: int) -> None:
        super().__init__(hidden, init_gate=0.5)


class _Legacy(nn.Module):
    """The plugin-API-1 signature: (inputs_embeds, image_mask, memory)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, embeds: torch.Tensor, image_mask: torch.Tensor, memory: Any) -> torch.Tensor:
        return torch.where(image_mask[..., None], self.scale * embeds, embeds)


def _adapter(module_cls: type[nn.Module], adapter_name: str) -> type[InputFusionAdapter]:
    class Adapter(InputFusionAdapter):
        name = adapter_name

        def build_module(self, hidden: int) -> nn.Module:
            return module_cls(hidden)

        def cost(self, model: nn.Module, image_tokens: int, text_tokens: int) -> FusionCost:
            hidden = int(self.anatomy(model).text_config(model).hidden_size)
            return FusionCost(
                self.trainable_params(model), image_tokens, text_tokens, 2 * hidden**2, 0
            )

    return Adapter


GOOD = _adapter(_Module, "test_film")
LEAKY = _adapter(_PoolsEverything, "test_leaky")
OPEN = _adapter(_OpenAtInit, "test_open")
LEGACY = _adapter(_Legacy, "test_legacy")


def _module(model: nn.Module) -> _Module:
    return model.model.language_model.mmrl_fusion  # type: ignore[no-any-return]


# -- what the module is called with ---------------------------------------------------------------


def test_fusion_inputs_mark_padding_prompt_and_completion(tiny_llava: LoadedVLM) -> None:
    model = copy.deepcopy(tiny_llava.model)
    GOOD().attach(model)
    prompt = _inputs(tiny_llava)
    pad = ~prompt["attention_mask"].bool()
    assert pad.any(), "the two questions differ in length, so one row is left-padded"
    with torch.no_grad():
        model(**prompt)
    seen = _module(model).seen[-1]
    assert torch.equal(seen.attention_mask, ~pad)
    assert torch.equal(seen.prompt_mask, ~pad)  # a plain forward is all prompt
    assert not seen.completion_mask.any() and not seen.decoding

    completion = torch.full((2, 3), int(prompt["input_ids"][0, -1]))
    length = prompt["input_ids"].shape[1]
    with torch.no_grad(), completion_boundary(model, length):
        model(**_with_completion(prompt, completion))
    seen = _module(model).seen[-1]
    expected = torch.zeros_like(seen.completion_mask)
    expected[:, length:] = True
    assert torch.equal(seen.completion_mask, expected)
    assert torch.equal(seen.prompt_mask[:, :length], ~pad)
    with torch.no_grad():  # outside the block the boundary is gone
        model(**_with_completion(prompt, completion))
    assert not _module(model).seen[-1].completion_mask.any()


def test_generate_decode_steps_are_completion(tiny_qwen: LoadedVLM) -> None:
    model = copy.deepcopy(tiny_qwen.model)
    GOOD().attach(model)
    with torch.no_grad():
        model.generate(**_inputs(tiny_qwen), max_new_tokens=3, min_new_tokens=3, do_sample=False)
    prefill, *steps = _module(model).seen
    assert not prefill.decoding and torch.equal(prefill.prompt_mask, prefill.attention_mask)
    assert len(steps) == 2
    for step in steps:
        assert step.decoding and step.inputs_embeds.shape[1] == 1
        assert not step.prompt_mask.any() and step.completion_mask.all()
        assert step.memory is not None  # the prefill's images stay available


def test_episodic_scoring_forward_marks_the_answer_as_completion(tiny_llava: LoadedVLM) -> None:
    from mmrl_harness.policy_head import LogitsOnly, prompt_length

    model = copy.deepcopy(tiny_llava.model)
    GOOD().attach(model)
    prompt = _inputs(tiny_llava)
    answer = torch.full((2, 2), int(prompt["input_ids"][0, -1]))
    full = _with_completion(prompt, answer)
    keep = answer.shape[1] + 1  # turn_inputs keeps the answer's logits and the one before
    assert prompt_length(full, keep) == prompt["input_ids"].shape[1]
    LogitsOnly(model)(full, keep)
    assert _module(model).seen[-1].completion_mask[:, -2:].all()
    assert not _module(model).seen[-1].completion_mask[:, :-2].any()


def test_the_grpo_trainer_hook_matches_trl_signature() -> None:
    import inspect

    from trl import GRPOTrainer

    # HarnessGRPOTrainer passes these four positionally to TRL; a rename upstream must fail here.
    params = list(inspect.signature(GRPOTrainer._get_per_token_logps_and_entropies).parameters)
    assert params[:5] == ["self", "model", "input_ids", "attention_mask", "logits_to_keep"]


# -- the kit accepts a correct adapter and catches broken ones --------------------------------------


def test_an_adapter_that_pools_the_prompt_only_meets_the_contract(tiny_qwen: LoadedVLM) -> None:
    report = check_fusion_adapter(GOOD, families=[tiny_qwen])
    assert report.passed and len(report.results) == 7  # loads, options, 5 per family


def test_pooling_padding_and_completion_is_caught(tiny_llava: LoadedVLM) -> None:
    report = check_fusion_adapter(LEAKY, families=[tiny_llava], raise_on_failure=False)
    failed = {r.name for r in report.failures}
    assert failed == {"batch_invariance [tiny-llava]", "no_completion_leak [tiny-llava]"}
    with pytest.raises(ContractViolation, match=r"depend on the batch.*prompt_mask"):
        report.raise_for_failures()


def test_changing_outputs_at_init_is_caught(tiny_llava: LoadedVLM) -> None:
    report = check_fusion_adapter(
        OPEN, families=[tiny_llava], checks=["identity"], raise_on_failure=False
    )
    assert [r.name for r in report.failures] == ["identity [tiny-llava]"]
    assert "zero-initialised gate" in report.failures[0].detail


def test_old_three_argument_modules_still_run_with_a_warning(tiny_llava: LoadedVLM) -> None:
    model = copy.deepcopy(tiny_llava.model)
    LEGACY().attach(model)
    inputs = _inputs(tiny_llava)
    legacy = r"_Legacy.forward\(inputs_embeds, image_mask, memory\)"
    with pytest.warns(FutureWarning, match=legacy), torch.no_grad():
        out = model(**inputs).logits
    with torch.no_grad():
        assert torch.equal(out, tiny_llava.model(**inputs).logits)  # scale 1: identity
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per class, not per forward
        with torch.no_grad():
            model(**inputs)


def test_in_process_registration_refuses_options_that_are_not_fusion_options() -> None:
    class PlainOptions(BaseModel):
        width: int = 4

    class Sloppy(GOOD):  # type: ignore[misc, valid-type]
        name = "sloppy"
        Options = PlainOptions  # type: ignore[assignment]

    with pytest.raises(PluginValidationError, match=r"Options must subclass .*FusionOptions"):
        fusion_adapters.register("sloppy", Sloppy)
    assert "sloppy" not in fusion_adapters.names()


def test_unknown_check_name_is_refused() -> None:
    from mmrl_harness.fusion import FusionOptionsError

    with pytest.raises(
        FusionOptionsError, match=r"unknown fusion contract check\(s\) \['idnetity'\]"
    ):
        check_fusion_adapter("concat", checks=["idnetity"])


def test_a_disabled_adapter_is_reported_as_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    from mmrl_harness import registry
    from mmrl_harness.registry import UnknownPluginError

    monkeypatch.setenv(registry.DISABLE_ENV, "fusion:weighted_sum")
    registry.reset()
    try:
        with pytest.raises(
            UnknownPluginError, match=r"'weighted_sum' .* is disabled by MMRL_DISABLE"
        ):
            attach_fusion(nn.Linear(1, 1), "weighted_sum")
    finally:
        monkeypatch.delenv(registry.DISABLE_ENV)
        registry.reset()


def test_grpo_training_forwards_see_the_completion_boundary(
    tiny_llava: LoadedVLM, tmp_path: Path
) -> None:
    from peft import LoraConfig

    from mmrl_harness.fusion import fusion_lora_config
    from mmrl_harness.train.algorithms.grpo_trainer import HarnessGRPOTrainer
    from mmrl_harness.train.callbacks import RunMeters

    model = copy.deepcopy(tiny_llava.model)
    adapter = GOOD()
    adapter.attach(model)
    dataset = color_prompts(["red", "blue"])
    args = tiny_grpo_config(tmp_path)
    trainer = HarnessGRPOTrainer(
        model=model,
        reward_funcs=lambda completions, **_: [0.0 for _ in completions],
        args=args,
        train_dataset=dataset,
        processing_class=tiny_llava.processor,
        peft_config=fusion_lora_config(model, LoraConfig(r=4, target_modules=["q_proj"]), adapter),
        meters=RunMeters(),
    )
    trainer.train()
    seen = adapter.fusion_module(trainer.model).seen  # type: ignore[union-attr]
    scoring = [s for s in seen if not s.decoding and s.completion_mask.any()]
    # TRL's scoring forward runs over prompt + completion: without the trainer's boundary every
    # position would count as prompt and the adapter would pool the sampled answer.
    assert scoring, "no training forward marked its completion tokens"
    for inputs in scoring:
        assert not (inputs.completion_mask & inputs.image_mask).any()
        first = int(inputs.completion_mask.any(dim=0).nonzero()[0])
        assert not inputs.prompt_mask[:, first:].any()
