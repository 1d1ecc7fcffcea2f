"""Loading VLMs, the tiny offline builds, their anatomy, and prompting them with images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from mmrl_harness.models import vocab
from mmrl_harness.models.anatomy import UnsupportedArchitectureError
from mmrl_harness.models.families.gemma3 import Gemma3OneImagePerPromptProcessor
from mmrl_harness.models.families.qwen2_5_vl import Qwen2_5_VLImageOnlyProcessor
from mmrl_harness.models.generation import (
    build_inputs,
    decode_answers,
    generate_answer,
    generate_answers,
    generate_ids,
)
from mmrl_harness.models.loading import (
    LoadedVLM,
    ModelNotFoundError,
    Qwen2VLImageOnlyProcessor,
    load_vlm,
    model_fingerprint,
)
from mmrl_harness.models.tiny import (
    IMAGE_TOKENS,
    UnknownTinyFamilyError,
    build_tiny_vlm,
    tiny_model_names,
    token_id,
)

#: Fixtures of every built-in family's tiny model (tests/conftest.py).
FAMILIES = ["tiny_llava", "tiny_qwen", "tiny_qwen2_5", "tiny_idefics3", "tiny_gemma3"]
#: The placeholder token each family's processor expands, one per image feature.
IMAGE_TOKEN = {
    "llava": vocab.IMAGE_TOKEN,
    "qwen2_vl": vocab.QWEN_IMAGE_TOKEN,
    "qwen2_5_vl": vocab.QWEN_IMAGE_TOKEN,
    "idefics3": vocab.IMAGE_TOKEN,
    "gemma3": vocab.IMAGE_TOKEN,
}
QUESTIONS = ["what color is the shape ?", "how many objects ?", "move"]


@pytest.fixture(params=FAMILIES)
def loaded(request: pytest.FixtureRequest) -> LoadedVLM:
    """Each tiny family in turn."""
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


def _images(n: int = 3) -> list[Image.Image]:
    colors = [(255, 0, 0), (0, 200, 0), (0, 0, 255), (250, 250, 0)]
    return [Image.new("RGB", (32, 32), colors[i % len(colors)]) for i in range(n)]


# -- vocabulary ----------------------------------------------------------------------------------


def test_vocabulary_is_small_and_every_answer_word_is_one_token(tiny_llava: LoadedVLM) -> None:
    assert len(vocab.VOCAB) <= 128
    for word in vocab.ANSWER_WORDS:
        assert tiny_llava.tokenizer.encode(word, add_special_tokens=False) == [token_id(word)]


def test_prompt_words_encode_without_unknowns(tiny_llava: LoadedVLM) -> None:
    ids = tiny_llava.tokenizer.encode("What color is the shape? Answer with one word.")
    assert token_id(vocab.UNK_TOKEN) not in ids
    assert tiny_llava.tokenizer.decode(ids) == "what color is the shape ? answer with one word ."


def test_special_tokens_are_added_special_tokens(tiny_qwen: LoadedVLM) -> None:
    added = {t.content for t in tiny_qwen.tokenizer.added_tokens_decoder.values() if t.special}
    assert added == set(vocab.SPECIAL_TOKENS)


# -- building and loading ------------------------------------------------------------------------


TINY = [
    ("tiny-llava", "llava", "LlavaForConditionalGeneration"),
    ("tiny-qwen2-vl", "qwen2_vl", "Qwen2VLForConditionalGeneration"),
    ("tiny-qwen2.5-vl", "qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration"),
    ("tiny-idefics3", "idefics3", "Idefics3ForConditionalGeneration"),
    ("tiny-gemma3", "gemma3", "Gemma3ForConditionalGeneration"),
]


def test_every_builtin_family_has_a_tiny_model() -> None:
    assert tiny_model_names() == {name: family for name, family, _ in TINY}


@pytest.mark.parametrize(("name", "family", "model_class"), TINY)
def test_tiny_names_load_through_load_vlm(name: str, family: str, model_class: str) -> None:
    loaded = load_vlm(name)
    assert type(loaded.model).__name__ == model_class
    assert loaded.anatomy.family == family
    assert loaded.name_or_path == name
    assert not loaded.model.training
    assert 50_000 < sum(p.numel() for p in loaded.model.parameters()) < 300_000
    # Shared words keep their ids in every family; a family's extra markup tokens come after.
    assert loaded.model.config.text_config.vocab_size == len(loaded.tokenizer) >= len(vocab.VOCAB)
    assert loaded.tokenizer.convert_tokens_to_ids(list(vocab.VOCAB)) == list(
        range(len(vocab.VOCAB))
    )


def test_unknown_tiny_family_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(UnknownTinyFamilyError, match=r"'llama'; choose one of gemma3, idefics3"):
        build_tiny_vlm("llama", tmp_path)


def test_same_seed_builds_identical_weights(tmp_path: Path) -> None:
    first = build_tiny_vlm("llava", tmp_path / "a", seed=3)
    second = build_tiny_vlm("llava", tmp_path / "b", seed=3)
    other = build_tiny_vlm("llava", tmp_path / "c", seed=4)
    assert first.name == second.name
    assert model_fingerprint(first) == model_fingerprint(second)
    assert model_fingerprint(first) != model_fingerprint(other)


def test_build_is_reused_unless_forced(tmp_path: Path) -> None:
    path = build_tiny_vlm("qwen2_vl", tmp_path)
    weights = path / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert build_tiny_vlm("qwen2_vl", tmp_path) == path
    assert weights.stat().st_mtime_ns == stamp
    before = model_fingerprint(path)
    assert build_tiny_vlm("qwen2_vl", tmp_path, force=True) == path
    assert model_fingerprint(path) == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp folders left behind


def test_build_leaves_the_global_rng_alone(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_vlm("llava", tmp_path, seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_build_rejects_image_size_that_does_not_tile(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multiple of 8, got 30"):
        build_tiny_vlm("llava", tmp_path, image_size=30)


@pytest.mark.parametrize(
    ("family", "processor_class"),
    [
        ("llava", "LlavaProcessor"),
        ("qwen2_vl", Qwen2VLImageOnlyProcessor.__name__),
        ("qwen2_5_vl", Qwen2_5_VLImageOnlyProcessor.__name__),
        ("idefics3", "Idefics3Processor"),
        ("gemma3", Gemma3OneImagePerPromptProcessor.__name__),
    ],
)
def test_plain_autoprocessor_loads_tiny_builds(family: str, processor_class: str) -> None:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(build_tiny_vlm(family))
    assert type(processor).__name__ == processor_class


def test_qwen_checkpoint_naming_the_stock_processor_loads_without_torchvision(
    tmp_path: Path,
) -> None:
    # Hub checkpoints name Qwen2VLProcessor, whose video processor imports torchvision.
    folder = tmp_path / "qwen"
    shutil.copytree(build_tiny_vlm("qwen2_vl"), folder)
    config_file = folder / "processor_config.json"
    config = json.loads(config_file.read_text())
    config["processor_class"] = "Qwen2VLProcessor"
    config_file.write_text(json.dumps(config))
    loaded = load_vlm(folder)
    assert isinstance(loaded.processor, Qwen2VLImageOnlyProcessor)


def test_provenance_records_the_weights_fingerprint(tiny_llava: LoadedVLM) -> None:
    record = tiny_llava.provenance()
    assert record["name_or_path"] == "tiny-llava"
    assert record["family"] == "llava"
    assert record["fingerprint"] == model_fingerprint(build_tiny_vlm("llava"))
    assert record["fingerprint"].startswith("sha256:")


def test_fingerprint_covers_weights_only(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(build_tiny_vlm("llava"), folder)
    before = model_fingerprint(folder)
    (folder / "optimizer.pt").write_bytes(b"trainer state, not the model")
    assert model_fingerprint(folder) == before
    (folder / "model.safetensors").write_bytes(b"other weights")
    assert model_fingerprint(folder) != before


def test_dtype_bfloat16_loads_and_generates() -> None:
    loaded = load_vlm("tiny-llava", dtype="bfloat16")
    assert loaded.model.dtype == torch.bfloat16
    assert isinstance(generate_answer(loaded, _images(1)[0], "what color ?"), str)


# -- anatomy -------------------------------------------------------------------------------------


def test_anatomy_paths_resolve_to_the_expected_modules(loaded: LoadedVLM) -> None:
    anatomy, model = loaded.anatomy, loaded.model
    text_config = anatomy.text_config(model)
    assert len(anatomy.layers(model)) == text_config.num_hidden_layers == 2
    assert anatomy.get(model, "embed_tokens").weight.shape == (len(loaded.tokenizer), 64)
    assert anatomy.get(model, "language_model").layers is anatomy.layers(model)
    assert anatomy.image_token_id(model) == token_id(IMAGE_TOKEN[anatomy.family])
    assert getattr(model.config.vision_config, anatomy.vision_hidden_size_attr) == 32
    assert anatomy.get(model, "projector") is not anatomy.get(model, "vision_tower")


def test_projector_output_is_the_image_tokens_fed_to_the_lm(loaded: LoadedVLM) -> None:
    seen: list[torch.Tensor] = []
    projector = loaded.anatomy.get(loaded.model, "projector")
    handle = projector.register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        with torch.no_grad():
            loaded.model(**build_inputs(loaded, _images(2), QUESTIONS[:2]))
    finally:
        handle.remove()
    (features,) = seen
    assert features.shape[-1] == loaded.anatomy.text_config(loaded.model).hidden_size
    assert features.reshape(-1, features.shape[-1]).shape[0] == 2 * IMAGE_TOKENS


def test_the_image_reaches_the_language_model(loaded: LoadedVLM) -> None:
    # A random tiny model must still see its image (Gemma 3 zero-initialises its projection).
    red, blue = _images(3)[0], _images(3)[2]
    with torch.no_grad():
        logits = [
            loaded.model(**build_inputs(loaded, [image], ["what color ?"])).logits[0, -1]
            for image in (red, blue)
        ]
    assert (logits[0] - logits[1]).abs().max() > 1e-3


# -- prompting -----------------------------------------------------------------------------------


def test_a_32px_image_becomes_16_image_tokens(loaded: LoadedVLM) -> None:
    inputs = build_inputs(loaded, _images(1), ["what color ?"])
    image_id = loaded.anatomy.image_token_id(loaded.model)
    assert int((inputs["input_ids"] == image_id).sum()) == IMAGE_TOKENS


def test_batches_are_left_padded(loaded: LoadedVLM) -> None:
    inputs = build_inputs(loaded, _images(2), ["move", "what color is the shape ?"])
    pad = token_id(vocab.PAD_TOKEN)
    short, long = inputs["input_ids"].tolist()
    assert short[:5] == [pad] * 5 and pad not in short[5:] + long  # 6 words vs 1
    assert inputs["attention_mask"][0].tolist() == [0] * 5 + [1] * (len(short) - 5)
    assert short[-1] == long[-1] == token_id("<|assistant|>")  # every prompt ends where it starts


def test_repeated_prompts_build_the_same_rows_as_distinct_calls(loaded: LoadedVLM) -> None:
    # Each distinct prompt is templated once per batch; every row must still be its own prompt.
    prompts = ["move", "what color is the shape ?", "move"]
    images = [*_images(2), _images(1)[0]]
    batched = build_inputs(loaded, images, prompts)
    for row, (image, prompt) in enumerate(zip(images, prompts, strict=True)):
        alone = build_inputs(loaded, [image], [prompt])
        keep = batched["attention_mask"][row].bool()
        assert batched["input_ids"][row][keep].tolist() == alone["input_ids"][0].tolist()


def test_generated_ids_are_new_vocabulary_words(loaded: LoadedVLM) -> None:
    inputs = build_inputs(loaded, _images(1), ["what color is the shape ?"])
    new_ids = generate_ids(loaded, inputs, max_new_tokens=5)
    assert new_ids.shape[0] == 1 and 1 <= new_ids.shape[1] <= 5
    allowed = {token_id(w) for w in (*vocab.ANSWER_WORDS, *vocab.PROMPT_WORDS)}
    allowed |= {token_id(vocab.EOS_TOKEN), token_id(vocab.PAD_TOKEN)}  # pad only after the end
    assert set(new_ids.flatten().tolist()) <= allowed
    words = decode_answers(loaded, new_ids)[0].split()
    assert all(w in vocab.VOCAB for w in words)


def test_generate_answer_decodes_only_the_new_tokens(loaded: LoadedVLM) -> None:
    image, question = _images(1)[0], "what color is the shape ?"
    answer = generate_answer(loaded, image, question, max_new_tokens=4)
    new_ids = generate_ids(loaded, build_inputs(loaded, [image], [question]), max_new_tokens=4)
    words = [i for i in new_ids[0].tolist() if i >= len(vocab.SPECIAL_TOKENS)]
    assert answer == " ".join(vocab.VOCAB[i] for i in words)


def test_greedy_generation_is_deterministic(loaded: LoadedVLM) -> None:
    first = generate_answers(loaded, _images(3), QUESTIONS)
    assert generate_answers(loaded, _images(3), QUESTIONS) == first


def test_batched_generation_equals_one_by_one(loaded: LoadedVLM) -> None:
    images = _images(3)
    batched = generate_ids(loaded, build_inputs(loaded, images, QUESTIONS), max_new_tokens=6)
    for row, (image, question) in enumerate(zip(images, QUESTIONS, strict=True)):
        alone = generate_ids(loaded, build_inputs(loaded, [image], [question]), max_new_tokens=6)
        assert batched[row, : alone.shape[1]].tolist() == alone[0].tolist()


def test_batched_logits_equal_one_by_one(loaded: LoadedVLM) -> None:
    images = _images(2)
    with torch.no_grad():
        batched = loaded.model(**build_inputs(loaded, images, QUESTIONS[1:])).logits[:, -1]
        for row in range(2):
            inputs = build_inputs(loaded, [images[row]], [QUESTIONS[1 + row]])
            alone = loaded.model(**inputs).logits[0, -1]
            # Padding changes matrix shapes and so the float32 summation order: agreement to
            # rounding (~1e-6 at these magnitudes) is the claim, not bit equality.
            torch.testing.assert_close(batched[row], alone, atol=1e-5, rtol=1e-4)


def test_build_inputs_needs_one_image_per_prompt(tiny_llava: LoadedVLM) -> None:
    with pytest.raises(ValueError, match="one image per prompt, got 1 images for 2 prompts"):
        build_inputs(tiny_llava, _images(1), ["a", "b"])


# -- errors --------------------------------------------------------------------------------------


def _one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_unknown_hub_id_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelNotFoundError) as err:
        load_vlm("no-such-org/no-such-vlm")
    message = _one_line(err)
    assert "'no-such-org/no-such-vlm'" in message
    assert "tiny-llava" in message and "built offline" in message


def test_nonexistent_path_is_a_one_line_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "model"
    with pytest.raises(ModelNotFoundError) as err:
        load_vlm(missing)
    message = _one_line(err)
    assert str(missing) in message and "tiny-qwen2-vl" in message


def test_folder_without_config_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"holds no config\.json") as err:
        load_vlm(tmp_path)
    _one_line(err)


def test_unsupported_vlm_family_names_the_supported_ones(tmp_path: Path) -> None:
    from transformers import PaliGemmaConfig

    config = PaliGemmaConfig(
        text_config={"hidden_size": 32, "num_hidden_layers": 1, "intermediate_size": 64},
        vision_config={"hidden_size": 32, "num_hidden_layers": 1, "intermediate_size": 64},
    )
    config.save_pretrained(tmp_path)
    with pytest.raises(UnsupportedArchitectureError) as err:
        load_vlm(tmp_path)
    message = _one_line(err)
    assert "'paligemma'" in message
    assert "gemma3, idefics3, llava, qwen2_5_vl, qwen2_vl" in message
    assert "mmrl_harness.architectures" in message


def test_a_text_only_model_is_an_unsupported_family(tmp_path: Path) -> None:
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=32, num_hidden_layers=1).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedArchitectureError, match="unsupported VLM family 'llama'"):
        load_vlm(tmp_path)


def test_unknown_model_type_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "not_a_real_vlm"}))
    with pytest.raises(UnsupportedArchitectureError, match="not_a_real_vlm") as err:
        load_vlm(tmp_path)
    _one_line(err)


def test_unknown_dtype_is_rejected() -> None:
    with pytest.raises(ValueError, match="unsupported dtype 'fp8'"):
        load_vlm("tiny-llava", dtype="fp8")
