"""The ``film`` adapter on real tiny VLMs: identity at init, padding invariance, cost, LoRA."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from mmrl_film import FiLMFusion, FiLMModulation
from peft import LoraConfig, PeftModel
from PIL import Image

from mmrl_harness.fusion import FusionOptionsError, apply_lora, attach_fusion
from mmrl_harness.fusion.flops import count_flops
from mmrl_harness.models.generation import build_inputs

# Different lengths, so the batch is left-padded.
QUESTIONS = ["what color is the shape ?", "how many objects are in the image ?"]
LORA = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])


def _inputs(loaded: Any, rows: int = 2) -> dict[str, torch.Tensor]:
    images = [Image.new("RGB", (32, 32), c) for c in [(255, 0, 0), (0, 0, 255)]]
    return dict(build_inputs(loaded, images[:rows], QUESTIONS[:rows]))


def _with_film(loaded: Any, **options: Any) -> tuple[Any, FiLMFusion]:
    model = copy.deepcopy(loaded.model)
    adapter = attach_fusion(model, "film", **options)
    assert isinstance(adapter, FiLMFusion)
    return model, adapter


def _open(model: torch.nn.Module, seed: int = 0) -> None:
    """Give the zero-initialised output layer random weights, as training would move them."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "mmrl_fusion.generator" in name:
                param.copy_(0.3 * torch.randn(param.shape, generator=generator))


def _generate(model: Any, inputs: dict[str, torch.Tensor]) -> Any:
    with torch.no_grad():
        return model.generate(
            **inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False,
            output_scores=True, return_dict_in_generate=True,
        )  # fmt: skip


def test_registered_through_its_entry_point() -> None:
    from mmrl_harness.registry import fusion_adapters

    assert fusion_adapters.load("film") is FiLMFusion
    assert fusion_adapters.infos()["film"].distribution == "mmrl-film"


def test_attaching_leaves_logits_and_generation_unchanged(loaded: Any) -> None:
    inputs = _inputs(loaded)
    with torch.no_grad():
        before = loaded.model(**inputs).logits
    expected = _generate(loaded.model, inputs).sequences
    model, _ = _with_film(loaded)
    with torch.no_grad():
        after = model(**inputs).logits
    # gamma = beta = 0 exactly: image tokens are multiplied by 1 and shifted by 0, bit for bit.
    assert torch.equal(after, before)
    assert torch.equal(_generate(model, inputs).sequences, expected)


def test_an_open_generator_changes_the_output(loaded: Any) -> None:
    inputs = _inputs(loaded)
    model, _ = _with_film(loaded)
    _open(model)
    with torch.no_grad():
        assert not torch.allclose(model(**inputs).logits, loaded.model(**inputs).logits)


def test_each_row_is_independent_of_the_batch_padding(loaded: Any) -> None:
    # The pooled text must leave out left padding: a padded row equals the same row alone.
    model, _ = _with_film(loaded, bottleneck=16)
    _open(model)
    inputs = _inputs(loaded)
    batched = _generate(model, inputs)
    for row in range(2):
        alone_inputs = _inputs_row(loaded, row)
        alone = _generate(model, alone_inputs)
        start = inputs["input_ids"].shape[1]
        assert torch.equal(
            batched.sequences[row, start:], alone.sequences[0, alone_inputs["input_ids"].shape[1] :]
        )
        # Padding changes matrix shapes and so float32 summation order (~1e-6 through two
        # layers); conditioning on padding would move logits by ~1e-1.
        torch.testing.assert_close(
            torch.stack(batched.scores)[:, row], torch.stack(alone.scores)[:, 0], atol=1e-4, rtol=0
        )


def _inputs_row(loaded: Any, row: int) -> dict[str, torch.Tensor]:
    image = Image.new("RGB", (32, 32), [(255, 0, 0), (0, 0, 255)][row])
    return dict(build_inputs(loaded, [image], [QUESTIONS[row]]))


@pytest.mark.parametrize("bottleneck", [None, 16])
def test_reported_cost_equals_the_measured_flops(loaded: Any, bottleneck: int | None) -> None:
    inputs = _inputs(loaded, rows=1)
    model, adapter = _with_film(loaded, bottleneck=bottleneck)
    measured = count_flops(lambda: model(**inputs)) - count_flops(lambda: loaded.model(**inputs))
    image_tokens = 16
    cost = adapter.cost(model, image_tokens, inputs["input_ids"].shape[1] - image_tokens)
    assert cost.extra_flops_per_forward == measured
    hidden = 64
    expected = 2 * hidden + (2 * hidden * hidden + 2 * hidden if bottleneck is None else (
        hidden * 16 + 16 + 16 * 2 * hidden + 2 * hidden
    ))  # fmt: skip
    assert cost.trainable_params == expected


def test_trains_with_lora_and_restores_exactly(loaded: Any, tmp_path: Path) -> None:
    model, adapter = _with_film(loaded)
    peft_model = apply_lora(model, adapter, LORA)
    inputs = _inputs(loaded)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-2)
    peft_model.train()
    for _ in range(2):
        logits = peft_model(**inputs).logits[:, :-1]
        F.cross_entropy(logits.flatten(0, 1), inputs["input_ids"][:, 1:].flatten()).backward()
        optimizer.step()
        optimizer.zero_grad()
    assert adapter.log_values(peft_model)["film/generator_norm"] > 0
    peft_model.save_pretrained(str(tmp_path))
    fresh, _ = _with_film(loaded)
    restored = PeftModel.from_pretrained(fresh, tmp_path)
    peft_model.eval()
    with torch.no_grad():
        assert torch.equal(restored(**inputs).logits, peft_model(**inputs).logits)


def test_invalid_options_name_the_value() -> None:
    with pytest.raises(FusionOptionsError, match=r"bottleneck=0"):
        FiLMFusion(bottleneck=0)
    with pytest.raises(FusionOptionsError, match=r"gain.*Allowed options: bottleneck"):
        FiLMFusion(gain=2)


def test_modulation_touches_image_tokens_only() -> None:
    module = FiLMModulation(hidden=8, bottleneck=None)
    with torch.no_grad():
        module.generator[-1].bias.fill_(0.5)  # gamma = beta = 0.5 whatever the text
    embeds = torch.randn(1, 4, 8)
    image_mask = torch.tensor([[False, True, True, False]])
    out = module(embeds, image_mask, None)  # the (embeds, image_mask, memory) call
    assert torch.equal(out[:, [0, 3]], embeds[:, [0, 3]])
    torch.testing.assert_close(out[:, 1:3], embeds[:, 1:3] * 1.5 + 0.5)  # one fma per element
