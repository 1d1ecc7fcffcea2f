"""Fusion adapters on both tiny VLM families: identity at init, decoding, cost, LoRA, GRPO."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig
from PIL import Image
from support import color_prompts, tiny_grpo_config

from mmrl_harness.fusion import (
    FusionAdapter,
    FusionAttachError,
    FusionOptionsError,
    apply_lora,
    attach_fusion,
    fusion_lora_config,
    validate_plugin,
)
from mmrl_harness.models.anatomy import Anatomy
from mmrl_harness.models.families.llava import LLAVA
from mmrl_harness.models.generation import build_inputs
from mmrl_harness.models.loading import LoadedVLM
from mmrl_harness.registry import PluginInfo, PluginValidationError, UnknownPluginError
from mmrl_harness.testing import check_fusion_adapter

#: Fixtures of every built-in family's tiny model (tests/conftest.py).
FAMILIES = ["tiny_llava", "tiny_qwen", "tiny_qwen2_5", "tiny_idefics3", "tiny_gemma3"]
#: Each adapter with options that exercise it on the 2-layer tiny models.
ADAPTERS: dict[str, dict[str, Any]] = {
    "concat": {"train_projector": True},
    "weighted_sum": {},
    "cross_attention": {"layers": [0, -1]},
    "mm_transformer": {"latents": 8, "depth": 1},
}
LORA = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
# Different lengths, so the batch is left-padded.
QUESTIONS = ["what color is the shape ?", "how many objects are in the image ?"]


@pytest.fixture(params=FAMILIES)
def loaded(request: pytest.FixtureRequest) -> LoadedVLM:
    """Each tiny family in turn (shared: tests attach to deep copies only)."""
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


def _images() -> list[Image.Image]:
    return [Image.new("RGB", (32, 32), c) for c in [(255, 0, 0), (0, 0, 255)]]


def _inputs(loaded: LoadedVLM, rows: int = 2) -> dict[str, torch.Tensor]:
    return dict(build_inputs(loaded, _images()[:rows], QUESTIONS[:rows]))


def _with_adapter(loaded: LoadedVLM, name: str, **options: Any) -> tuple[Any, FusionAdapter]:
    model = copy.deepcopy(loaded.model)
    return model, attach_fusion(model, name, **options)


def _open_gates(model: torch.nn.Module, value: float = 0.8) -> None:
    """Move every zero-initialised gate/coefficient away from zero, as training would."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "mmrl" in name and name.endswith(("gate", "image_to_text")):
                param.fill_(value)


def _generate(model: Any, inputs: dict[str, torch.Tensor], **kwargs: Any) -> Any:
    # min_new_tokens: a random tiny model may end its turn at once, skipping the decode steps.
    with torch.no_grad():
        return model.generate(
            **inputs,
            max_new_tokens=5,
            min_new_tokens=5,
            do_sample=False,
            output_scores=True,
            return_dict_in_generate=True,
            **kwargs,
        )


def _adapter_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable copies PEFT keeps of the adapter modules."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if "modules_to_save" in n}


# -- identity at initialisation ------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ADAPTERS))
def test_builtin_adapter_meets_the_contract(loaded: LoadedVLM, name: str) -> None:
    # The checks plugin authors run (mmrl_harness.testing), on every built-in: identity at init
    # (logits and greedy generation), batch invariance and no completion leak with moved
    # parameters, reported FLOPs equal to measured, LoRA train/save/restore, options.
    check_fusion_adapter(name, ADAPTERS[name], families=[loaded])


@pytest.mark.parametrize("name", ["weighted_sum", "cross_attention", "mm_transformer"])
def test_open_gates_change_the_output(loaded: LoadedVLM, name: str) -> None:
    inputs = _inputs(loaded)
    model, _ = _with_adapter(loaded, name, **ADAPTERS[name])
    _open_gates(model)
    with torch.no_grad():
        assert not torch.allclose(model(**inputs).logits, loaded.model(**inputs).logits)


# -- KV-cached generation ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["weighted_sum", "cross_attention", "mm_transformer"])
def test_cached_decode_steps_see_the_prefill_images(loaded: LoadedVLM, name: str) -> None:
    # With open gates, decode steps only match a full recompute if they fuse the same images.
    inputs = _inputs(loaded)
    model, _ = _with_adapter(loaded, name, **ADAPTERS[name])
    _open_gates(model)
    cached = _generate(model, inputs)
    recomputed = _generate(model, inputs, use_cache=False)
    # A decode step attends one query over cached keys, the recompute all queries at once: the
    # same sums in another order, a few float32 ulps per op over a handful of layers (~1e-5 at
    # these logit magnitudes); 1e-4 leaves a margin, while fusing the wrong images moves logits
    # by ~1e-1. Greedy tokens agree unless two logits tie within that error (not at random init).
    assert torch.equal(cached.sequences, recomputed.sequences)
    torch.testing.assert_close(
        torch.stack(cached.scores), torch.stack(recomputed.scores), rtol=0, atol=1e-4
    )


@pytest.mark.parametrize("name", ["weighted_sum", "cross_attention", "mm_transformer"])
def test_each_row_fuses_its_own_image(loaded: LoadedVLM, name: str) -> None:
    model, _ = _with_adapter(loaded, name, **ADAPTERS[name])
    _open_gates(model)
    inputs = _inputs(loaded)
    batched = _generate(model, inputs)
    for row in range(2):
        alone_inputs = dict(build_inputs(loaded, [_images()[row]], [QUESTIONS[row]]))
        alone = _generate(model, alone_inputs)
        new_alone = alone.sequences[0, alone_inputs["input_ids"].shape[1] :]
        # Batched rows are left-padded and run in larger matrices: another summation order, so
        # logits agree to float32 rounding through a few layers (~1e-5), checked at 1e-4.
        assert torch.equal(batched.sequences[row, inputs["input_ids"].shape[1] :], new_alone)
        torch.testing.assert_close(
            torch.stack(batched.scores)[:, row], torch.stack(alone.scores)[:, 0], atol=1e-4, rtol=0
        )


def test_cross_attention_image_keys_values_are_computed_once_per_generate(
    tiny_llava: LoadedVLM,
) -> None:
    model, _ = _with_adapter(tiny_llava, "cross_attention", **ADAPTERS["cross_attention"])
    _open_gates(model)
    blocks = [m for n, m in model.named_modules() if n.endswith("mmrl_xattn")]
    kv_calls: list[int] = []
    for block in blocks:
        block.attn.to_kv.register_forward_hook(lambda *_: kv_calls.append(1))
    red, blue = (
        _inputs(tiny_llava, rows=2),
        dict(build_inputs(tiny_llava, _images()[::-1], QUESTIONS)),
    )
    _generate(model, red)
    cached_blue = _generate(model, blue)
    # 2 blocks, 2 calls: only the prefills project the images (5 new tokens = 1 prefill + 4 steps).
    assert len(kv_calls) == 2 * 2
    for block in blocks:
        block.cache_image_kv = False
    kv_calls.clear()
    recomputed_blue = _generate(model, blue)
    assert len(kv_calls) == 2 * 5
    # Same ops on the same image tokens, so exact: and the second call's cache held blue, not red.
    assert torch.equal(cached_blue.sequences, recomputed_blue.sequences)
    assert torch.equal(torch.stack(cached_blue.scores), torch.stack(recomputed_blue.scores))


def test_text_only_forward_after_generation_ignores_old_images(tiny_llava: LoadedVLM) -> None:
    model, _ = _with_adapter(tiny_llava, "cross_attention")
    _open_gates(model)
    _generate(model, _inputs(tiny_llava))
    text_ids = tiny_llava.tokenizer(["what color"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = tiny_llava.model(input_ids=text_ids).logits
        assert torch.equal(model(input_ids=text_ids).logits, expected)


# -- cost ----------------------------------------------------------------------------------------


def test_cross_attention_cost_matches_a_hand_count(tiny_llava: LoadedVLM) -> None:
    model, adapter = _with_adapter(tiny_llava, "cross_attention", layers=[1], heads=4, ff_mult=2)
    hidden = width = 64  # tiny-llava's text hidden size; width defaults to it
    n_img, n_text = 16, 10
    cost = adapter.cost(model, image_tokens=n_img, text_tokens=n_text)
    # 3 LayerNorms (weight + bias), q/kv/out projections, a 2x MLP, 2 scalar gates.
    assert cost.trainable_params == 3 * 2 * hidden + 4 * hidden * width + 2 * 2 * hidden**2 + 2
    # K/V of the image tokens once; q, out, scores+values and the MLP at each of 26 positions.
    assert cost.flops_per_image == 2 * n_img * hidden * 2 * width
    per_position = 2 * hidden * width + 2 * width * hidden + 4 * n_img * width + 4 * hidden * 128
    assert cost.flops_per_token == per_position
    assert cost.extra_flops_per_forward == 262_144 + 26 * 53_248


def test_weighted_sum_and_mm_transformer_parameter_counts(tiny_llava: LoadedVLM) -> None:
    model, adapter = _with_adapter(tiny_llava, "weighted_sum")
    assert adapter.cost(model, 16, 8).trainable_params == 3
    model, adapter = _with_adapter(tiny_llava, "weighted_sum", per_channel=True)
    assert adapter.cost(model, 16, 8).trainable_params == 3 * 64
    model, adapter = _with_adapter(tiny_llava, "mm_transformer", latents=8, depth=0, width=32)
    h, w = 64, 32
    read = 2 * w + (w * w + 2 * h * w + w * w) + 2 * w + 2 * w * 2 * w  # norm, attn, norm, mlp
    write = w * h + 2 * w * w + w * h
    expected = 8 * w + 2 * h + read + 2 * w + write + 1  # latents, image norm, latent norm, gate
    assert adapter.cost(model, 16, 8).trainable_params == expected


def test_log_values_start_at_identity_and_follow_training(tiny_qwen: LoadedVLM) -> None:
    model, adapter = _with_adapter(tiny_qwen, "weighted_sum")
    assert adapter.log_values(model) == {
        "weighted_sum/text": 1.0,
        "weighted_sum/image": 1.0,
        "weighted_sum/image_to_text": 0.0,
    }
    model, adapter = _with_adapter(tiny_qwen, "cross_attention", layers=[1])
    peft_model = apply_lora(model, adapter, LORA)
    assert adapter.log_values(peft_model) == {
        "cross_attention/layer_1/attn_gate": 0.0,
        "cross_attention/layer_1/ff_gate": 0.0,
    }
    _open_gates(peft_model, 0.5)  # sets the trainable copy, which is what runs and is logged
    assert adapter.log_values(peft_model)["cross_attention/layer_1/attn_gate"] == pytest.approx(
        float(torch.tanh(torch.tensor(0.5)))
    )


# -- options and errors --------------------------------------------------------------------------


def test_unknown_and_invalid_options_name_the_offending_value() -> None:
    from mmrl_harness.fusion.cross_attention import CrossAttentionFusion

    with pytest.raises(FusionOptionsError, match=r"'cross_attention'.*lyers.*Allowed options"):
        CrossAttentionFusion(lyers=[1])
    with pytest.raises(FusionOptionsError, match=r"every=0"):
        CrossAttentionFusion(every=0)
    with pytest.raises(FusionOptionsError, match=r"latents='many'"):
        attach_fusion(torch.nn.Linear(1, 1), "mm_transformer", latents="many")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"layers": [2]}, r"layer index 2 is out of range .* 2 layers \(valid: -2\.\.1\)"),
        ({"layers": [1, -1]}, r"names decoder layer\(s\) \[1\] more than once"),
        ({"layers": []}, r"inserts no block"),
        ({"heads": 5}, r"width 64 is not divisible by heads=5"),
    ],
)
def test_cross_attention_layer_options_are_checked_against_the_model(
    tiny_llava: LoadedVLM, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(FusionOptionsError, match=message):
        _with_adapter(tiny_llava, "cross_attention", **options)


def test_family_without_the_needed_hook_is_a_clear_error(tiny_llava: LoadedVLM) -> None:
    from dataclasses import replace

    from mmrl_harness.fusion.cross_attention import CrossAttentionFusion

    broken: Anatomy = replace(LLAVA, family="odd", decoder_layers="model.language_model.blocks")
    with pytest.raises(
        FusionAttachError,
        match=r"decoder_layers of family 'odd' at 'model\.language_model\.blocks'",
    ):
        CrossAttentionFusion().attach(copy.deepcopy(tiny_llava.model), broken)


def test_one_adapter_per_model_attached_before_lora(tiny_llava: LoadedVLM) -> None:
    model, _ = _with_adapter(tiny_llava, "weighted_sum")
    with pytest.raises(FusionAttachError, match=r"already has fusion adapter 'weighted_sum'"):
        attach_fusion(model, "cross_attention")
    wrapped = apply_lora(model, None, LORA)
    with pytest.raises(FusionAttachError, match="PEFT-wrapped"):
        attach_fusion(wrapped, "concat")
    with pytest.raises(FusionAttachError, match="no fusion adapter is attached"):
        fusion_lora_config(copy.deepcopy(tiny_llava.model), LORA)


def test_unknown_adapter_name_suggests_the_closest() -> None:
    with pytest.raises(UnknownPluginError, match=r"Did you mean 'cross_attention'"):
        attach_fusion(torch.nn.Linear(1, 1), "cross_atention")


def test_registry_lists_and_validates_the_four_builtins() -> None:
    from mmrl_harness.registry import fusion_adapters

    assert {"concat", "weighted_sum", "cross_attention", "mm_transformer"} <= set(
        fusion_adapters.names()
    )
    for name in ADAPTERS:
        assert fusion_adapters.load(name).name == name
    info = PluginInfo("bad", "fusion", "x:y", "dist", "1.0")
    with pytest.raises(PluginValidationError, match="must be a subclass"):
        validate_plugin(object, info)
    with pytest.raises(PluginValidationError, match="does not implement"):
        validate_plugin(FusionAdapter, info)


# -- GRPO ----------------------------------------------------------------------------------------

#: One family per adapter keeps the file fast; together they cover every family at least once.
GRPO_RUNS = [
    ("concat", "tiny_llava"),
    ("weighted_sum", "tiny_qwen"),
    ("cross_attention", "tiny_llava"),
    ("mm_transformer", "tiny_qwen"),
    ("weighted_sum", "tiny_qwen2_5"),
    ("cross_attention", "tiny_idefics3"),
    ("mm_transformer", "tiny_gemma3"),
]


@pytest.mark.parametrize(("name", "family"), GRPO_RUNS)
def test_two_grpo_steps_train_the_adapter(
    request: pytest.FixtureRequest, name: str, family: str, tmp_path: Path
) -> None:
    from trl import GRPOTrainer

    loaded: LoadedVLM = request.getfixturevalue(family)
    model, adapter = _with_adapter(loaded, name, **ADAPTERS[name])
    dataset = color_prompts(["red", "green", "blue", "yellow"])

    def first_token_parity(
        completions: list[Any], completion_ids: list[list[int]], **_: Any
    ) -> list[float | None]:
        # Reward variance without a trained model: half the vocabulary is "right".
        return [float(ids[0] % 2) if ids else 0.0 for ids in completion_ids]

    args = tiny_grpo_config(
        tmp_path,
        per_device_train_batch_size=4,
        num_generations=4,
        max_steps=2,
        learning_rate=5e-2,
        temperature=1.5,
        logging_steps=1,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=first_token_parity,
        args=args,
        train_dataset=dataset,
        processing_class=loaded.processor,
        peft_config=fusion_lora_config(model, LORA, adapter),
    )
    assert trainer.model is not None
    initial = _adapter_tensors(trainer.model)
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2
    assert all(float(entry["reward_std"]) > 0 for entry in logs)
    trained = _adapter_tensors(trainer.model)
    assert any(not torch.equal(trained[k], initial[k]) for k in initial), (
        "GRPO did not train the adapter"
    )
